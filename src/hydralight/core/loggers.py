"""Loggers with fixes the project needs on top of Lightning's."""

import csv
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _HeaderAwareWriter(ExperimentWriter):
    """Appends to an existing metrics.csv and keeps its columns when new ones arrive.

    Lightning's writer deletes a metrics.csv it finds (a resumed run would lose its curves so far), and it only
    knows the columns it saw itself: under `strategy=ddp_spawn` each stage (fit, then test) runs in fresh processes
    with a copy of the writer from before fit, so the test stage's header rewrite fails ("dict contains fields not
    in fieldnames").
    """

    def _check_log_dir_exists(self) -> None:
        pass  # keep what is there: run dirs are unique, so an existing file is this run's, resumed

    def _record_new_keys(self) -> set[str]:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys.extend(key for key in header if key not in self.metrics_keys)
        return super()._record_new_keys()


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger whose metrics.csv survives stages run in different processes."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HeaderAwareWriter(log_dir=self.log_dir)
        return self._experiment


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger without the `anonymous` argument it always passes to `wandb.init`: wandb >= 0.19
    warns that the setting has no effect, on every run, and the user can do nothing about it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            del self._wandb_init["anonymous"]
