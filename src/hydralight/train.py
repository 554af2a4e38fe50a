"""The train task: build everything from the config, fit (resuming if there is a checkpoint to continue from),
test the best checkpoint, return the sweep metric."""

import errno
from collections.abc import Iterator
from contextlib import contextmanager

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from hydralight.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_trainer,
    close_loggers,
    info,
    log_hyperparameters,
    quiet_console,
)
from hydralight.callbacks import Preemption, RNGState, TaskRecord
from hydralight.checkpoints import check_compatible, checkpoint_dir, read_checkpoint
from hydralight.errors import Preempted, UserError
from hydralight.report import print_config_tree, print_final_metrics
from hydralight.runs import newest_checkpoint, training_started


def resume_checkpoint(cfg: DictConfig, trainer: pl.Trainer, model: pl.LightningModule) -> str | None:
    """`ckpt_path` if given; else with `resume=auto` the run dir's newest loadable checkpoint; else None."""
    path = cfg.ckpt_path
    if path is None and cfg.get("resume", "auto") == "auto":
        path = newest_checkpoint(trainer.default_root_dir, checkpoint_dir(trainer))
    if path is None:
        return None
    check_compatible(model, read_checkpoint(path), path)  # a clear error now, not a traceback from inside fit
    info("Resuming from %s", path)
    return str(path)


@contextmanager
def disk_full_is_a_clear_error(trainer: pl.Trainer) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        raise UserError(
            f"the disk is full ({error.filename or checkpoint_dir(trainer)}). Checkpoints are written atomically, "
            "so the ones already on disk are intact: free some space and re-run the same command to continue."
        ) from error


def train(cfg: DictConfig) -> float | None:
    """Train per `cfg`; returns `cfg.optimized_metric` from the final metrics (None if it was not logged)."""
    quiet_console()
    if cfg.get("print_config"):
        print_config_tree(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    info("Model: %s with net %s", cfg.model._target_, cfg.model.net._target_)
    model = instantiate(cfg.model)
    loggers = build_loggers(cfg.get("logger"))
    preemption = Preemption()
    callbacks = build_callbacks(cfg.get("callbacks"), cfg.paths.output_dir, has_logger=bool(loggers))
    callbacks += [RNGState(), preemption]  # what bitwise resume and a clean preemption need, whatever the config
    callbacks.append(TaskRecord(OmegaConf.to_container(cfg.data, resolve=True)))  # what eval/predict rebuild
    trainer = build_trainer(cfg, callbacks, loggers)
    ckpt_path = resume_checkpoint(cfg, trainer, model)
    training_started()  # from here on the run dir holds this run's work, whatever happens
    log_hyperparameters(loggers, cfg)
    info("Training")
    with disk_full_is_a_clear_error(trainer):
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException as stop:
            saved = f"saved {preemption.saved}" if preemption.saved else "nothing to save yet"
            raise Preempted(
                f"stopped by a signal at step {trainer.global_step}, {saved}. "
                "Re-run the same command (same run dir, resume=auto) to continue."
            ) from stop
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}

        if cfg.get("test"):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if not best:
                info("No best checkpoint (checkpointing is off): testing the weights as they are now.")
            info("Testing %s", best or "the current weights")
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})

    close_loggers()
    info("Final metrics: %s", metrics)
    print_final_metrics(metrics, cfg.paths.output_dir)
    return metrics.get(cfg.get("optimized_metric"))
