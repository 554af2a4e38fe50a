"""Writes into every checkpoint which task it belongs to, so eval, predict and export rebuild that task from it."""

import copy
from collections.abc import Mapping
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf

from hydralight.core.runs.checkpoints import TASK_KEY


def class_path(cls: type) -> str:
    """The dotted path `hydra.utils.get_class` imports `cls` from."""
    return f"{cls.__module__}.{cls.__qualname__}"


class TaskRecord(Callback):
    """`checkpoint["task"] = {"module": <LightningModule class path>, "data": <the resolved data config>}`.

    Plain containers only, so `torch.load(path, weights_only=True)` still reads the checkpoint. Lightning skips
    callbacks when it saves a weights-only checkpoint (`save_weights_only=true`): those are rebuilt from the run's
    `.hydra/config.yaml` instead.
    """

    def __init__(self, data: Mapping[str, Any] | None) -> None:
        self.data = data  # resolved at each save: a value the run settled later (tune=batch_size) is recorded too

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        data = self.data
        if isinstance(data, DictConfig):
            data = OmegaConf.to_container(data, resolve=True, enum_to_str=True)
        checkpoint[TASK_KEY] = {"module": class_path(type(pl_module)), "data": copy.deepcopy(data)}
