"""tune=lr_find and tune=batch_size: Lightning's finders, run before training; the run trains with what they find,
and its saved config records it."""

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BatchSizeFinder as LightningBatchSizeFinder
from lightning.pytorch.callbacks import LearningRateFinder
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.parsing import lightning_hasattr, lightning_setattr

from hydralight.core.errors import UserError
from hydralight.core.runs.provenance import record_what_ran

log = logging.getLogger(__name__)
LR_ATTRIBUTES = ("lr", "learning_rate")  # where Lightning's own finder looks: a module attribute or hparams


def _not_a_trial_line(record: logging.LogRecord) -> bool:
    """Each trial of a finder is a short fit of its own, and Lightning reports each one's end as if training ended."""
    return not str(record.msg).startswith("`Trainer.fit` stopped:")


@contextmanager
def quiet_trials() -> Iterator[None]:
    """While a finder runs: no line per trial that says training stopped, no warning about a trial's few batches."""
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    rank_zero_logger.addFilter(_not_a_trial_line)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging")
            yield
    finally:
        rank_zero_logger.removeFilter(_not_a_trial_line)


def steepest_descent(results: dict[str, list[float]], skip_begin: int = 10, skip_end: int = 1) -> float | None:
    """The learning rate where the smoothed loss falls fastest per decade of learning rate.

    Lightning's own suggestion differentiates with respect to the learning rate itself; on an exponential sweep that
    favours the first, tiny steps (1e-5 where 4e-3 trains well, on the digits). The slope per log10(lr) is the
    usual reading of the range test's curve.
    """
    losses = torch.tensor(results.get("loss", []), dtype=torch.float64)[skip_begin:-skip_end]
    lrs = torch.tensor(results.get("lr", []), dtype=torch.float64)[skip_begin:-skip_end]
    finite = torch.isfinite(losses)
    losses, lrs = losses[finite], lrs[finite]
    if len(losses) < 3:
        return None
    slope = torch.gradient(losses, spacing=[torch.log10(lrs)])[0]
    return float(lrs[torch.argmin(slope)])


class LRFinder(LearningRateFinder):
    """Before training, a short run with a growing learning rate suggests one; training then uses it.

    The suggestion goes into the optimizers and schedulers already built, and into the hyperparameter that holds the
    learning rate, so checkpoints and the run's `.hydra/config.yaml` record it: this project's models keep it in
    their optimizer config (`hparams.optimizer.lr`, `model.optimizer.lr`), others in an `lr` or `learning_rate`
    argument (`model.lr`), where Lightning's own finder looks. The suggestion is the steepest descent of the loss per
    decade of learning rate. A resumed run keeps the learning rate it had. The suggestion and the whole curve go to
    `<dirpath>/lr_find.json`.
    """

    def __init__(self, dirpath: str | Path = ".", **kwargs: Any) -> None:
        super().__init__(update_attr=False, **kwargs)
        self.dirpath = Path(dirpath)
        self.suggestion: float | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.ckpt_path:
            log.info("tune=lr_find: resuming from a checkpoint, so the run keeps its learning rate.")
            return
        super().on_fit_start(trainer, pl_module)

    def lr_find(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning's test stops at max_epochs too: a short run (trainer.max_epochs=2) would test only its low rates.
        max_epochs, trainer.fit_loop.max_epochs = trainer.fit_loop.max_epochs, -1
        try:
            with quiet_trials():
                super().lr_find(trainer, pl_module)
        finally:
            trainer.fit_loop.max_epochs = max_epochs
        self.suggestion = steepest_descent(self.optimal_lr.results) if self.optimal_lr is not None else None
        if self.suggestion is None:
            log.warning("tune=lr_find found no learning rate (too few steps?): training keeps the configured one.")
        else:
            key = self.apply(trainer, pl_module, self.suggestion)
            if key is not None:
                record_what_ran(trainer.default_root_dir, {key: self.suggestion})
            elif rank_zero_only.rank == 0:
                log.warning(
                    "tune=lr_find: %s has no hparams.optimizer, lr or learning_rate to hold the learning rate, so its "
                    "checkpoints and .hydra/config.yaml keep the configured one; the optimizers train with %.3g.",
                    type(pl_module).__name__,
                    self.suggestion,
                )
        self.save()

    @staticmethod
    def set_hyperparameter(pl_module: LightningModule, lr: float) -> str | None:
        """Set the hyperparameter that holds the learning rate (saved in checkpoints); its config key, or None."""
        optimizer_config = pl_module.hparams.get("optimizer")
        if isinstance(optimizer_config, dict):
            optimizer_config["lr"] = lr
            return "model.optimizer.lr"
        for name in LR_ATTRIBUTES:
            if name in pl_module.hparams or hasattr(pl_module, name):
                lightning_setattr(pl_module, name, lr)
                return f"model.{name}"
        return None

    @classmethod
    def apply(cls, trainer: Trainer, pl_module: LightningModule, lr: float) -> str | None:
        """The hyperparameter, the built optimizers and their schedulers' base learning rates; returns the config key
        that records it (None: the module keeps it elsewhere)."""
        key = cls.set_hyperparameter(pl_module, lr)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
                if "initial_lr" in group:
                    group["initial_lr"] = lr
        for config in trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [lr] * len(config.scheduler.base_lrs)
        if rank_zero_only.rank == 0:
            log.info("tune=lr_find: training with the suggested learning rate %.3g", lr)
        return key

    @rank_zero_only
    def save(self) -> None:
        results = self.optimal_lr.results if self.optimal_lr is not None else {}
        report = {
            "suggestion": self.suggestion,
            "lr": [float(value) for value in results.get("lr", [])],
            "loss": [float(value) for value in results.get("loss", [])],
        }
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / "lr_find.json").write_text(json.dumps(report, indent=2) + "\n")


class BatchSizeFinder(LightningBatchSizeFinder):
    """Lightning's batch-size finder; its result replaces `data.<batch_arg_name>` in the run's `.hydra/config.yaml`."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str | None = None) -> None:
        """What Lightning's finder refuses (a module and data without a batch-size attribute, DDP) in one line."""
        try:
            super().setup(trainer, pl_module, stage)
        except MisconfigurationException as error:
            missing = not lightning_hasattr(pl_module, self._batch_arg_name)
            hint = (
                f" The finder changes that attribute: give the data module a `{self._batch_arg_name}` argument, or "
                "name its own with callbacks.batch_size_finder.batch_arg_name=<attribute>."
            )
            raise UserError(f"tune=batch_size: {error}{hint if missing else ''}") from error

    def scale_batch_size(self, trainer: Trainer, pl_module: LightningModule) -> None:
        with quiet_trials():
            super().scale_batch_size(trainer, pl_module)
        most = samples_per_process(trainer)
        if self.optimal_batch_size is not None and most is not None and self.optimal_batch_size > most:
            # Lightning's doubling stops only once the size is past the split: a batch larger than every sample a
            # process has trains exactly as one that holds them all, and only that size is valid on the next run.
            log.info("tune=batch_size: %d is more than the %d training samples of a process: using %d",
                     self.optimal_batch_size, most, most)  # fmt: skip
            lightning_setattr(pl_module, self._batch_arg_name, most)
            self.optimal_batch_size = most
        if self.optimal_batch_size is not None and hasattr(trainer.datamodule, self._batch_arg_name):
            record_what_ran(trainer.default_root_dir, {f"data.{self._batch_arg_name}": self.optimal_batch_size})


def samples_per_process(trainer: Trainer) -> int | None:
    """How many training samples one process's loader draws from per epoch; None where the loader cannot say."""
    loader = trainer.train_dataloader
    dataset = getattr(loader, "dataset", None)
    try:
        total = len(dataset)
    except TypeError:  # no loader yet, several loaders, or an iterable dataset
        return None
    return -(-total // max(trainer.world_size, 1))
