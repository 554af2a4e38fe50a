"""Export a checkpoint:  python export.py ckpt_path=<file> [format=torchscript|exported_program|onnx]  (see README)."""

from hydralight.core.cli import export_main

if __name__ == "__main__":
    export_main()
