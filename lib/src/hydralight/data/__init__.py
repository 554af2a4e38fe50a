"""Data modules a task can use as they are or build on: in memory (InMemoryDataModule, for arrays that fit) and on
disk (PreparedDataModule, for a dataset `python prepare.py` wrote, or that PrepareIfMissing writes on first use).
Each is imported when first named."""

from importlib import import_module
from typing import Any

_MODULE_OF = {"InMemoryDataModule": "base", "PreparedDataModule": "ondisk", "PrepareIfMissing": "ondisk"}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
