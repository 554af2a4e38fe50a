"""OmegaConf resolvers the configs use. Registered by the CLI before Hydra composes anything."""

import os
from pathlib import Path

from omegaconf import OmegaConf


def unique_dir(path: str) -> str:
    """Claim `path` (or `path_1`, `path_2`, ...) by creating it atomically, so two runs never share a run dir.

    Hydra resolves the run dir once per process; DDP ranks and torchrun nodes get it as an explicit
    `hydra.run.dir=...` override, so they never come here.
    """
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


def register_resolvers() -> None:
    """Idempotent: safe to call from every entrypoint and test."""
    # use_cache: the run dir is resolved several times within one process and must stay the same dir.
    OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True, replace=True)
