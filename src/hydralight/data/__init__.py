"""LightningDataModules. Each config in conf/data/ instantiates one of these."""

from hydralight.data.digits import DigitsDataModule
from hydralight.data.mnist import MNISTDataModule

__all__ = ["DigitsDataModule", "MNISTDataModule"]
