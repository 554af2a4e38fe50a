"""Loggers with fixes the project needs on top of Lightning's, and what makes a resumed run continue the runs its
loggers wrote before."""

import csv
import json
import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from hydralight.compat.lightning import (
    convert_params,
    flatten_dict,
    mlflow_client,
    mlflow_run_id,
    mlflow_tracking_uri,
    set_mlflow_run_id,
    set_wandb_run_id,
    tensorboard_writer_kwargs,
    wandb_run_id,
)
from hydralight.core import files

log = logging.getLogger(__name__)
RUN_IDS_FILE = "loggers.json"  # in the run dir: the MLflow and W&B run ids a resumed run continues


class _HeaderAwareWriter(ExperimentWriter):
    """Appends to an existing metrics.csv and keeps its columns when new ones arrive.

    Lightning's writer deletes a metrics.csv it finds (a resumed run would lose its curves so far), and it only
    knows the columns it saw itself: under `strategy=ddp_spawn` each stage (fit, then test) runs in fresh processes
    with a copy of the writer from before fit, so the test stage's header rewrite fails ("dict contains fields not
    in fieldnames").
    """

    def _check_log_dir_exists(self) -> None:
        pass  # keep what is there: run dirs are unique, so an existing file is this run's, resumed

    def _record_new_keys(self) -> set[str]:  # compat.CSV_RECORD_NEW_KEYS
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


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's MLFlowLogger that can continue a run with changed params: MLflow refuses to change a param once
    logged, so a resumed run (e.g. with trainer.max_epochs raised) keeps the first values and says which changed."""

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        logged = self.experiment.get_run(self.run_id).data.params
        params = flatten_dict(convert_params(params))
        changed = sorted(key for key, value in params.items() if logged.get(key, str(value)[:250]) != str(value)[:250])
        if changed:
            log.warning("MLflow keeps the params run %s was started with; not changed: %s", self.run_id, changed)
        super().log_hyperparams({key: value for key, value in params.items() if key not in logged})


def logging_step(ckpt_path: str | Path) -> int:
    """The step a run resumed from `ckpt_path` logs first: Lightning logs at its count of batches that stepped."""
    from hydralight.core.runs.checkpoints import read_checkpoint

    checkpoint = read_checkpoint(ckpt_path)
    epoch_loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    return int(epoch_loop.get("_batches_that_stepped", checkpoint.get("global_step", 0)))


def _drop_rows_from(metrics_csv: Path, step: int) -> None:
    """Rewrite `metrics_csv` without its rows at `step` or later (atomically: a kill leaves the old file or the new)."""
    if not metrics_csv.is_file():
        return
    with metrics_csv.open(newline="") as file:
        reader = csv.DictReader(file)
        rows = [row for row in reader if not row.get("step") or int(row["step"]) < step]
        header = reader.fieldnames or []
    with files.atomic_path(metrics_csv) as kept, kept.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def _mlflow_run_exists(logger: LightningMLFlowLogger, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client(logger).get_run(run_id)
    except MlflowException:
        log.warning(
            "MLflow run %s (%s) is not in %s: starting a new run", run_id, RUN_IDS_FILE, mlflow_tracking_uri(logger)
        )
        return False
    return True


@rank_zero_only
def continue_logging(loggers: list[Logger], run_dir: str | Path, ckpt_path: str | Path | None) -> None:
    """Before anything is logged: a run resumed from `ckpt_path` logs into the MLflow run and the W&B run id its
    first start recorded in `<run dir>/loggers.json`, and since it logs again every step from the checkpoint's on,
    the rows of those steps go from metrics.csv and TensorBoard hides their events (`purge_step`). Without a
    checkpoint the run starts over: new run ids, and the dir's CSV and TensorBoard logs start again from step 0."""
    ids_file = Path(run_dir) / RUN_IDS_FILE
    saved = json.loads(ids_file.read_text()) if ckpt_path is not None and ids_file.is_file() else {}
    first_step = logging_step(ckpt_path) if ckpt_path is not None else 0
    ids = {}
    for logger in loggers:
        if isinstance(logger, LightningCSVLogger):
            _drop_rows_from(Path(logger.log_dir) / ExperimentWriter.NAME_METRICS_FILE, first_step)
        elif isinstance(logger, TensorBoardLogger):
            tensorboard_writer_kwargs(logger).setdefault("purge_step", first_step)
        elif isinstance(logger, LightningMLFlowLogger):
            if mlflow_run_id(logger) is None and saved.get("mlflow") and _mlflow_run_exists(logger, saved["mlflow"]):
                set_mlflow_run_id(logger, saved["mlflow"])
            ids["mlflow"] = logger.run_id  # a new run is created here
        elif isinstance(logger, LightningWandbLogger):
            if wandb_run_id(logger) is None and saved.get("wandb"):
                set_wandb_run_id(logger, saved["wandb"])  # with Lightning's resume="allow"
            _ = logger.experiment  # a new run gets its id here
            ids["wandb"] = logger.version
    if ids:
        files.write_text(ids_file, json.dumps({**saved, **ids}, indent=2) + "\n")
