"""Strategies Lightning 2 lacks: DataParallel (`dp`), and sharding (tensor parallel + FSDP2: `sharded`) that runs on
CPUs too. Each is imported when it is first named (the strategy config's `_target_`), so a run loads only the one it
uses."""

from importlib import import_module
from typing import Any

_MODULE_OF = {"DataParallelStrategy": "dp", "ShardedStrategy": "sharded"}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
