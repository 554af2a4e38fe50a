"""The run's `.hydra/config.yaml` states what ran: values settled only once the run started (the precision Lightning
really uses, the learning rate tune=lr_find chose) replace the ones asked for. `overrides.yaml` keeps what was typed."""

import re
import subprocess
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from hydralight.compat.omegaconf import raw_value
from hydralight.core import files

_PLAIN_INTERPOLATION = re.compile(r"\$\{([\w.]+)\}")
_ABSENT = object()


def saved_config_path(output_dir: str | Path) -> Path | None:
    """Where Hydra saved this run's config (`<run dir>/<hydra.output_subdir>/config.yaml`); None if it saves none."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        if hydra.output_subdir is None:  # hydra.output_subdir=null, as for Lightning's DDP ranks > 0
            return None
        return Path(hydra.runtime.output_dir) / hydra.output_subdir / "config.yaml"
    return Path(output_dir) / ".hydra" / "config.yaml"  # outside Hydra's runtime (tests): where Hydra would put it


def _chain(config: DictConfig, key: str) -> list[str]:
    """`key`, then each key it is a plain interpolation of: `trainer.precision: ${precision}` is set through
    `precision`, the last of the chain."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(config, parent_key) if parent_key else config
    if isinstance(parent, DictConfig) and leaf in parent and OmegaConf.is_interpolation(parent, leaf):
        match = _PLAIN_INTERPOLATION.fullmatch(str(raw_value(parent, leaf)))
        if match:
            return [key, *_chain(config, match.group(1))]
    return [key]


def _references(node: Any, target: str) -> list[str]:
    """The keys under `node` (a plain container) whose raw value is exactly `${target}` or
    `${oc.select:target,<default>}`."""
    reference = re.compile(rf"\$\{{(?:oc\.select:)?{re.escape(target)}(?:,[^}}]*)?\}}")

    def found(node: Any, key: str) -> list[str]:
        if isinstance(node, dict | list):
            items = node.items() if isinstance(node, dict) else enumerate(node)
            return [ref for name, value in items for ref in found(value, f"{key}.{name}".lstrip("."))]
        return [key] if isinstance(node, str) and reference.fullmatch(node) else []

    return found(node, "")


def record_what_ran(output_dir: str | Path, values: dict[str, Any], cfg: DictConfig | None = None) -> None:
    """Set each dotted key of `values` to what the run really uses, in the saved config (rank 0) and in `cfg` (what
    the loggers receive); everything else is kept."""
    if cfg is not None:
        _update(cfg, values)
    _rewrite_saved_config(output_dir, values)


def _update(config: DictConfig, values: dict[str, Any]) -> bool:
    """Set the keys `config` has to `values`, and only those: another key that interpolates one of them keeps its
    value (the batch-size finder's `init_val: ${data.batch_size}` was where it started). Whether anything changed."""
    changed = False
    for key, value in values.items():
        chain = _chain(config, key)
        owner = chain[-1]
        current = OmegaConf.select(config, owner, default=_ABSENT, throw_on_resolution_failure=False)
        if current is _ABSENT or current == value:
            continue
        raw = OmegaConf.to_container(config, resolve=False)
        for reference in _references(raw, owner):
            if reference not in chain:
                OmegaConf.update(config, reference, current, merge=False)
        OmegaConf.update(config, owner, value, merge=False)
        changed = True
    return changed


@rank_zero_only
def _rewrite_saved_config(output_dir: str | Path, values: dict[str, Any]) -> None:
    """Atomically (temp file + rename), and only if a value differs: a reader never sees half a file."""
    path = saved_config_path(output_dir)
    if path is None or not path.is_file():
        return
    saved = OmegaConf.load(path)
    if not _update(saved, values):
        return
    files.write_text(path, OmegaConf.to_yaml(saved))  # what Hydra itself writes (hydra.core.utils._save_config)


def git_state(directory: str | Path) -> dict[str, Any]:
    """The commit checked out in `directory` and whether tracked files differ from it; None for both outside git."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=True)
        return result.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, no commit yet
        return {"commit": None, "dirty": None}
