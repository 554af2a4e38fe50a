"""Rebuilding the task a checkpoint was trained on, for eval, predict and export: its LightningModule class (loaded
weights-only) and its data config, from the checkpoint's own record or its run's config, every name in them checked
against what the project allows before anything is imported or built (hydralight.core.trust)."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from hydralight.compat.hydra import locate  # what instantiate resolves a `_target_` with
from hydralight.core.errors import UserError
from hydralight.core.runs.checkpoints import TASK_KEY, read_checkpoint

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override
    from lightning.pytorch import LightningModule

    from hydralight.core.trust import Allowed

log = logging.getLogger(__name__)
INFERENCE_TASKS = ("eval", "predict", "export")  # their run configs say what they read, not what was trained


@dataclass(frozen=True)
class TrainedTask:
    """What a checkpoint was trained with, and where that was read."""

    module: str | None  # the LightningModule's class path
    data: DictConfig | None  # the data config, unresolved when it comes from the run's config
    source: str  # for messages: the run's config file, or the checkpoint's own record


def run_config(ckpt_path: str | Path) -> tuple[Path, DictConfig] | None:
    """The `.hydra/config.yaml` of the training run that wrote `ckpt_path` (`<run>/checkpoints/x.ckpt`, or
    `<run>/x.ckpt` like SLURM's hpc_ckpt files), if it is there."""
    path = Path(ckpt_path).resolve()
    for run_dir in (path.parent.parent, path.parent):
        config_path = run_dir / ".hydra" / "config.yaml"
        if not config_path.is_file():
            continue
        config = OmegaConf.load(config_path)
        if isinstance(config, DictConfig) and config.get("task_name") not in INFERENCE_TASKS:
            return config_path, config
    return None


def trained_task(ckpt_path: str | Path, checkpoint: dict[str, Any]) -> TrainedTask:
    """The module class from the checkpoint's record (else the run's config); the data config from the run's
    config (else the record), as that is the file a user reads and may correct."""
    record = checkpoint.get(TASK_KEY)
    record = record if isinstance(record, dict) else {}
    found = run_config(ckpt_path)
    run_model = found[1].get("model") if found else None
    run_data = found[1].get("data") if found else None
    module = record.get("module") or (run_model.get("_target_") if isinstance(run_model, DictConfig) else None)
    module = str(module) if module else None
    if isinstance(run_data, DictConfig):
        data = OmegaConf.create(OmegaConf.to_container(run_data, resolve=False))  # detached: resolves where it lands
        return TrainedTask(module, data, str(found[0]))
    if isinstance(record.get("data"), dict):
        # `${` is escaped: a record is resolved when written, and a checkpoint's strings never reach a resolver.
        escaped = _escape_interpolations(record["data"])
        return TrainedTask(module, OmegaConf.create(escaped), f"the record in {ckpt_path}")
    return TrainedTask(module, None, str(ckpt_path))


def _escape_interpolations(node: object) -> object:
    if isinstance(node, dict):
        return {key: _escape_interpolations(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_escape_interpolations(value) for value in node]
    return node.replace("${", "\\${") if isinstance(node, str) else node


def checked_class(path: object, base: type, what: str, allow: "Allowed") -> type:
    """The class at dotted `path`, refused unless the project allows the name (checked before anything is imported)
    and it is a subclass of `base`: a checkpoint names it, and a checkpoint is data (hydralight.core.trust)."""
    allow.check_names({"_target_": path}, what)
    try:
        cls = locate(str(path))
    except Exception as error:  # a moved or uninstalled class
        reason = (str(error).strip().splitlines() or [""])[0]
        raise UserError(
            f"{what} names {path!r}, which cannot be imported here ({type(error).__name__}: {reason})."
        ) from error
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise UserError(f"{what} names {path!r}, which is not a {base.__name__}; it is not built.")
    return cls


def load_trained(ckpt_path: str | Path, allow: "Allowed") -> tuple["LightningModule", TrainedTask]:
    """The checkpoint's own LightningModule class, loaded with `weights_only=True`, and what it was trained with.
    Every name in the file is checked against `allow` before anything is imported or built."""
    from lightning.pytorch import LightningModule

    checkpoint = read_checkpoint(ckpt_path)
    where = f"ckpt_path={str(ckpt_path)!r}"
    task = trained_task(ckpt_path, checkpoint)
    if task.module is None:
        raise UserError(
            f"{where} does not say which LightningModule wrote it (no task record, no run "
            "config beside it): give a checkpoint train.py wrote, inside its run dir (<run>/checkpoints/)."
        )
    model_class = checked_class(task.module, LightningModule, where, allow)
    # Every `_target_` anywhere in the file: the hyperparameters under any key Lightning reads them from included.
    allow.check({key: value for key, value in checkpoint.items() if key != "state_dict"}, where)
    try:
        model = model_class.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as error:  # whatever the file holds, the user needs the path and the reason
        raise UserError(
            f"{where} could not be loaded as a {model_class.__name__} checkpoint: "
            f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
        ) from error
    return model, task


def typed_overrides() -> list[str]:
    """What the user typed on the command line (Hydra's `overrides.task`); none outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _parse(overrides: Sequence[str]) -> list["Override"]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def _in_group(override: "Override", group: str) -> bool:
    key = override.key_or_group
    return key == group or key.startswith((f"{group}/", f"{group}."))


def _log(level: int, message: str, *args: object) -> None:
    """Once per run, not once per DDP rank."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        log.log(level, message, *args)


def report_ignored(overrides: Sequence[str], group: str, reason: str) -> list[str]:
    """One log line naming the typed overrides of `group` that this task does not use (they compose, so Hydra
    says nothing, but they change nothing)."""
    ignored = [override.input_line for override in _parse(overrides) if _in_group(override, group)]
    if ignored:
        _log(logging.WARNING, "ignored: %s: %s", " ".join(ignored), reason)
    return ignored


def trained_data_config(
    cfg: DictConfig, ckpt_path: str | Path, task: TrainedTask, overrides: Sequence[str], allow: "Allowed"
) -> DictConfig:
    """Set `cfg.data` to the data the checkpoint was trained on, with the user's `data.<key>=<value>` on top;
    `data=<option>` on the command line chooses another data module instead. Returns the new `cfg.data`, whose
    every `_target_` the project allows (`allow`), checked before anything in it is resolved or built."""
    from lightning.pytorch import LightningDataModule

    parsed = _parse(overrides)
    chosen = [override.input_line for override in parsed if override.key_or_group == "data"]
    if chosen:
        trained = task.data.get("_target_") if task.data is not None else "data it does not record"
        _log(logging.INFO, "Data config: %s as given (the checkpoint was trained on %s)", chosen[-1], trained)
    elif task.data is None and cfg.get("data") is None:
        raise UserError(
            f"{ckpt_path} records no data config and has no run config beside it, and this project has no default "
            "data: choose one with data=<option>"
        )
    elif task.data is None:
        _log(
            logging.WARNING,
            "%s records no data config and has no run config beside it: using the default %s (data=<option> "
            "chooses another).", ckpt_path, cfg.data.get("_target_"),
        )  # fmt: skip
    else:
        data = task.data
        for override in parsed:
            if override.key_or_group.startswith("data."):
                key = override.key_or_group.removeprefix("data.")
                if override.is_delete():
                    parent, _, leaf = key.rpartition(".")
                    node = OmegaConf.select(data, parent) if parent else data
                    if isinstance(node, DictConfig) and leaf in node:
                        with open_dict(node):
                            del node[leaf]
                else:
                    OmegaConf.update(data, key, OmegaConf.select(cfg, override.key_or_group), force_add=True)
        with open_dict(cfg):
            cfg.data = data
        _log(logging.INFO, "Data config: as trained, from %s", task.source)
    where = f"the data config (from {task.source})"
    # Names only: a run config keeps Hydra's interpolations, and a checkpoint's record has its own escaped.
    allow.check_names(OmegaConf.to_container(cfg.data, resolve=False), where)
    try:
        OmegaConf.to_container(cfg.data, resolve=True)
    except OmegaConfBaseException as error:
        raise UserError(f"{where} does not resolve here: {error}") from error
    checked_class(cfg.data.get("_target_"), LightningDataModule, where, allow)
    return cfg.data
