"""The library's own Lightning callbacks. Each is imported when it is first named (a config's `_target_`, an import),
so a run loads only the callbacks it uses."""

from importlib import import_module
from typing import Any

_MODULE_OF = {
    "Freeze": "freeze",
    "GradientGuard": "gradient_guard",
    "LRFinder": "tuning",
    "LastCheckpoint": "resume",
    "LayersSummary": "reports",
    "MetricsJson": "reports",
    "Preemption": "resume",
    "ResumeState": "resume",
    "TaskRecord": "resume",
    "Throughput": "reports",
    "TrainingPlots": "plots",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
