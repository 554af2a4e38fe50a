"""What the CLI registers with Hydra and OmegaConf before Hydra composes anything: the OmegaConf resolvers the configs
use, and the Hydra callbacks only a multirun needs (`multirun_only`), with `in_multirun`, which the CLI and the train
task both ask."""

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

# Run dirs this process created, so a run refused before it started can remove its own new dir (and only that).
created_dirs: set[Path] = set()


def unique_dir(path: str | Path) -> str:
    """Claim `path` (or `path_1`, `path_2`, ...) by creating it atomically, so two runs never share a run dir,
    even when started in the same second by different jobs or nodes on a shared filesystem."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = base, 0
    while True:
        try:
            os.mkdir(candidate)
            created_dirs.add(candidate.resolve())
            return str(candidate)
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}_{n}")


def job_run_name() -> str | None:
    """A run name every process of one distributed job agrees on without a shared clock, or None.

    torchrun starts the Hydra app once per process on every node: they share the rendezvous id (`--rdzv-id`, a
    fresh one with `--standalone`). Every task of a SLURM job shares its job id, which a requeued job keeps, so the
    requeued job finds its checkpoints. Lightning's own DDP launcher passes `hydra.run.dir` to its ranks instead.
    """
    torchrun_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if torchrun_id:
        return f"torchrun-{torchrun_id}"  # "torchrun-none" (no --rdzv-id) is refused by the run-dir guard
    slurm_job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if slurm_job and "SLURM_PROCID" in os.environ:
        array_task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm-{slurm_job}" + (f"_{array_task}" if array_task else "")
    return None


def run_dir(parent: str, name: str | None = None) -> str:
    """`parent/<name>` for a named run (the same dir every time: re-running continues it), `parent/<job name>`
    inside a torchrun or SLURM job, else a new `parent/<date>_<time>[_N]`. Hydra resolves this once per process."""
    name = name or job_run_name()
    if name:
        return str(Path(parent) / str(name))
    return unique_dir(Path(parent) / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))


def launch_dir() -> str:
    """The dir the command was started in. Inside a Hydra job that is Hydra's `runtime.cwd`; before the job (the
    run dir, the sweep dir, Hydra's callbacks) Hydra has no config to ask yet, and the process's own cwd is the same
    dir: `hydra.job.chdir` is false."""
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.cwd)
    return os.getcwd()


def process_tag() -> str:
    """`rank N` (the global rank where the launcher sets it, else the local one) for log lines."""
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or os.environ.get("LOCAL_RANK") or "0"
    node = os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK")
    return f"rank {rank}" + (f" node {node}" if node and "RANK" not in os.environ else "")


def prepared(path: str, name: str, _root_: Any = None) -> object:
    """`${prepared:<path>,<name>}` (hydralight.core.prepared), imported by the configs that use it only. The root
    config's `data.prepare_if_missing`, if any, answers for a dataset it writes on first use (core.prepare)."""
    from hydralight.core.prepared import prepared_value, written_on_first_use

    first_use = OmegaConf.select(_root_, "data.prepare_if_missing", default=None) if _root_ is not None else None
    if written_on_first_use(path, first_use):
        from hydralight.core.prepare import planned_value

        return planned_value(path, name, first_use)
    return prepared_value(path, name)


def register_resolvers() -> None:
    """Idempotent: safe to call from every entrypoint and test."""
    # use_cache: the run dir is resolved several times within one process and must stay the same dir.
    OmegaConf.register_new_resolver("run_dir", run_dir, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("process_tag", process_tag, replace=True)
    OmegaConf.register_new_resolver("launch_dir", launch_dir, replace=True)
    OmegaConf.register_new_resolver("prepared", prepared, replace=True)


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
