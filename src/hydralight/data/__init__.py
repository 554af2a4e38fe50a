"""LightningDataModules. Each config in conf/data/ instantiates one of these."""

from hydralight.data.digits import DigitsDataModule
from hydralight.data.mnist import MNISTDataModule
from hydralight.data.ondisk import PreparedDataModule
from hydralight.data.shakespeare import ShakespeareDataModule  # copier:if gpt_example

__all__ = [
    "DigitsDataModule",
    "MNISTDataModule",
    "PreparedDataModule",
    "ShakespeareDataModule",  # copier:if gpt_example
]
