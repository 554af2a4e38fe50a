"""The eval task: rebuild the model from a checkpoint's own hyperparameters and test it."""

import lightning.pytorch as pl
from hydra.utils import get_class
from lightning.pytorch import LightningModule
from omegaconf import DictConfig

from hydralight.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_trainer,
    close_loggers,
    info,
    quiet_console,
)
from hydralight.checkpoints import read_checkpoint
from hydralight.errors import UserError


def load_model(model_class: type[LightningModule], ckpt_path: str) -> LightningModule:
    """Load with `weights_only=True`: a checkpoint is data and never runs code."""
    read_checkpoint(ckpt_path)
    try:
        return model_class.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as error:  # whatever the file holds, the user needs the path and the reason
        raise UserError(
            f"ckpt_path={ckpt_path!r} could not be loaded as a {model_class.__name__} checkpoint: "
            f"{type(error).__name__}: {error}"
        ) from error


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint at `cfg.ckpt_path`; returns the test metrics (also written to metrics.json)."""
    quiet_console()
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    info("Loading %s", cfg.ckpt_path)
    model = load_model(get_class(cfg.model._target_), cfg.ckpt_path)
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(cfg.get("callbacks"), cfg.paths.output_dir, has_logger=bool(loggers))
    trainer = build_trainer(cfg, callbacks, loggers)
    trainer.test(model, datamodule=datamodule)
    close_loggers()
    return {name: float(value) for name, value in trainer.callback_metrics.items()}
