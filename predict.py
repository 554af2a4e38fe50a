"""Predict with a checkpoint:  python predict.py ckpt_path=<file> [input=<file> | prompt=<text>] [output=<file>]
(see README)."""

from hydralight.core.cli import predict_main

if __name__ == "__main__":
    predict_main()
