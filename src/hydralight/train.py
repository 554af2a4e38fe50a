"""The train task: build everything from the config, fit, test the best checkpoint, return the sweep metric."""

import logging

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from hydralight.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_trainer,
    info,
    log_hyperparameters,
    quiet_console,
)
from hydralight.checkpoints import read_checkpoint

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | None:
    """Train per `cfg`; returns `cfg.optimized_metric` from the final metrics (None if it was not logged)."""
    quiet_console()
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    info("Model: %s with net %s", cfg.model._target_, cfg.model.net._target_)
    model = instantiate(cfg.model)
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(cfg.get("callbacks"), cfg.paths.output_dir, has_logger=bool(loggers))
    trainer = build_trainer(cfg, callbacks, loggers)
    log_hyperparameters(loggers, cfg)

    if cfg.ckpt_path:
        read_checkpoint(cfg.ckpt_path)  # a clear error now, not a traceback from inside fit
    info("Training")
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}

    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            info("No best checkpoint (checkpointing is off): testing the weights as they are now.")
        info("Testing %s", best or "the current weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})

    info("Final metrics: %s", metrics)
    return metrics.get(cfg.get("optimized_metric"))
