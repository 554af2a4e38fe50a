"""Hydra multirun support: job isolation (sweeps over DDP jobs), parallel jobs' share of the machine, the sweep
summary with failure reporting and groups of replicates, and the folder of an Optuna sqlite storage.

All are Hydra callbacks (hydralight/conf/hydra/default.yaml, the project's conf/hparams_search/*). They do nothing in
a single run, and importing them loads no torch: `--help`, `--cfg job` and config errors stay fast.
"""

from hydralight.core.sweeps.isolation import JobIsolation
from hydralight.core.sweeps.share import MachineShare
from hydralight.core.sweeps.storage import StorageDir
from hydralight.core.sweeps.summary import SweepSummary

__all__ = ["JobIsolation", "MachineShare", "StorageDir", "SweepSummary"]
