"""Hydra multirun support: job isolation (sweeps over DDP jobs), parallel jobs' share of the machine, the sweep
summary with failure reporting and groups of replicates, and the folder of an Optuna sqlite storage.

All are Hydra callbacks (hydralight/conf/hydra/default.yaml, the project's conf/hparams_search/*), built only in a
multirun (hydralight.core.resolvers.multirun_only), so a single run imports none of them; importing them loads no
torch either: `--help`, `--cfg job` and config errors stay fast. Each is imported when it is first named.
"""

from importlib import import_module
from typing import Any

_MODULE_OF = {"JobIsolation": "isolation", "MachineShare": "share", "StorageDir": "storage", "SweepSummary": "summary"}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
