"""Train, then test the best checkpoint:  python train.py [group=option ...] [key=value ...]  (see README)."""

from hydralight.core.cli import train_main

if __name__ == "__main__":
    train_main()
