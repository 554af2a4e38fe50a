"""LightningDataModules. Each config in conf/data/ instantiates one of these."""

from my_project.data.digits import DigitsDataModule
from my_project.data.mnist import MNISTDataModule
from my_project.data.shakespeare import ShakespeareDataModule  # copier:if gpt_example

__all__ = [
    "DigitsDataModule",
    "MNISTDataModule",
    "ShakespeareDataModule",  # copier:if gpt_example
]
