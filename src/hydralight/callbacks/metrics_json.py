"""Writes `<run dir>/metrics.json` (a contract: sweeps and scripts read it)."""

import json
import os
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor


class MetricsJson(Callback):
    """After fit and after test, merge the run's final metrics as floats into one JSON object (rank 0 only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metrics: dict[str, float] = {}

    def _update(self, trainer: Trainer) -> None:
        for name, value in trainer.callback_metrics.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                self.metrics[name] = float(value)
        if trainer.is_global_zero and not trainer.sanity_checking:
            self.write()

    def write(self) -> None:
        """Atomically (temp file + rename): a reader never sees half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(dict(sorted(self.metrics.items())), indent=2) + "\n")
        os.replace(tmp, self.path)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._update(trainer)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._update(trainer)
