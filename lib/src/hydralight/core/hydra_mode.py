"""Which mode Hydra runs this job in: the CLI and the train task both ask, so neither imports the other for it; and
the Hydra callbacks that only a multirun needs, built only in one."""

from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode


def in_multirun() -> bool:
    """Inside a job of a `-m` sweep (where exiting would end every job after this one)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def multirun_only(callback: str, run_mode: RunMode | str | None, **kwargs: Any) -> Callback:
    """The Hydra callback at class path `callback`, built with `kwargs`, in a multirun (`run_mode`: `${hydra.mode}`);
    Hydra's no-op base in a single run. Hydra builds every callback its config names on every run, and the sweep
    callbacks (hydralight.core.sweeps) do nothing in a single run: this way a single run imports none of them."""
    if getattr(run_mode, "name", run_mode) != RunMode.MULTIRUN.name:
        return Callback()
    from hydra.utils import get_class

    return get_class(callback)(**kwargs)
