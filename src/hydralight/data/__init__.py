"""LightningDataModules. Each config in conf/data/ instantiates one of these."""

from hydralight.data.digits import DigitsDataModule
from hydralight.data.mnist import MNISTDataModule
from hydralight.data.shakespeare import ShakespeareDataModule  # copier:if gpt_example

__all__ = [
    "DigitsDataModule",
    "MNISTDataModule",
    "ShakespeareDataModule",  # copier:if gpt_example
]
