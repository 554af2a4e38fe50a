"""Data modules a task can use as they are or build on: in memory (InMemoryDataModule, for arrays that fit) and on
disk (PreparedDataModule, for a dataset `python prepare.py` wrote)."""

from hydralight.data.base import InMemoryDataModule
from hydralight.data.ondisk import PreparedDataModule

__all__ = ["InMemoryDataModule", "PreparedDataModule"]
