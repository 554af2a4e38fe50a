"""Loggers with fixes the project needs on top of Lightning's."""

import csv

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _HeaderAwareWriter(ExperimentWriter):
    """Keeps the columns already in metrics.csv when new ones arrive.

    Lightning's writer only knows the columns it saw itself. Under `strategy=ddp_spawn` each stage (fit, then test)
    runs in fresh processes with a copy of the writer from before fit, so the test stage's rewrite of the header
    drops fit's columns and fails ("dict contains fields not in fieldnames").
    """

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
