"""Writes `<run dir>/metrics.json` (a contract: sweeps and scripts read it)."""

import json
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from hydralight.core import files


def monitoring_checkpoint(trainer: Trainer, monitor: str | None) -> ModelCheckpoint | None:
    """The ModelCheckpoint that keeps the best `monitor` (whatever its place among the callbacks), or None."""
    matching = [callback for callback in trainer.checkpoint_callbacks if getattr(callback, "monitor", None) == monitor]
    return matching[0] if matching else None


def best_metrics(trainer: Trainer, monitor: str | None) -> dict[str, float]:
    """`{"<monitor>_best": score}` from the checkpoint that monitors it (the sweep metric); {} if none does."""
    checkpointer = monitoring_checkpoint(trainer, monitor)
    if checkpointer is None or checkpointer.best_model_score is None:
        return {}
    return {f"{monitor}_best": float(checkpointer.best_model_score)}


class MetricsJson(Callback):
    """After fit and after test, merge the final metrics as floats into `path` (rank 0 only), with the best
    `monitor` as `<monitor>_best`.

    Merging with what the file already holds (rather than with what this object saw) keeps fit's metrics when test
    runs in other processes, as under `strategy=ddp_spawn`, and a resumed run updates its dir's file.
    """

    def __init__(self, path: str | Path, monitor: str | None = None) -> None:
        self.path = Path(path)
        self.monitor = monitor

    def read(self) -> dict[str, float]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def write(self, metrics: dict[str, float]) -> None:
        """Whole or not at all: a reader never sees half a file."""
        files.write_text(self.path, json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")

    def _update(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = self.read()
        for name, value in trainer.callback_metrics.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                metrics[name] = float(value)
        for name, value in best_metrics(trainer, self.monitor).items():
            if name not in trainer.callback_metrics:  # a module's own `<monitor>_best` (val/acc_best) comes first
                metrics[name] = value
        self.write(metrics)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._update(trainer)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._update(trainer)
