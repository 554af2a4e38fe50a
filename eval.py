"""Test a checkpoint:  python eval.py ckpt_path=<file> [key=value ...]  (see README)."""

from hydralight.core.cli import eval_main

if __name__ == "__main__":
    eval_main()
