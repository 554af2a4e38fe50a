"""Which mode Hydra runs this job in: the CLI and the train task both ask, so neither imports the other for it."""

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def in_multirun() -> bool:
    """Inside a job of a `-m` sweep (where exiting would end every job after this one)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
