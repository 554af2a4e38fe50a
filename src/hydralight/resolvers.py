"""OmegaConf resolvers the configs use. Registered by the CLI before Hydra composes anything."""

import os
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf


def unique_dir(path: str | Path) -> str:
    """Claim `path` (or `path_1`, `path_2`, ...) by creating it atomically, so two runs never share a run dir,
    even when started in the same second by different jobs or nodes on a shared filesystem."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = base, 0
    while True:
        try:
            os.mkdir(candidate)
            return str(candidate)
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}_{n}")


def run_dir(parent: str, name: str | None = None) -> str:
    """`parent/<name>` for a named run (the same dir every time: re-running continues it), else a new
    `parent/<date>_<time>[_N]`.

    Hydra resolves this once per process; DDP ranks and torchrun nodes get the dir as an explicit
    `hydra.run.dir=...` (or share a `run_name`), so they never claim a dir of their own.
    """
    if name:
        return str(Path(parent) / str(name))
    return unique_dir(Path(parent) / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))


def register_resolvers() -> None:
    """Idempotent: safe to call from every entrypoint and test."""
    # use_cache: the run dir is resolved several times within one process and must stay the same dir.
    OmegaConf.register_new_resolver("run_dir", run_dir, use_cache=True, replace=True)
