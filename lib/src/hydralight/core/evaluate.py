"""The eval task: rebuild the checkpoint's own task (its LightningModule class and the data it was trained on) and
test it."""

from collections.abc import Sequence

import lightning.pytorch as pl
from omegaconf import DictConfig

from hydralight.core.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_trainer,
    close_run,
)
from hydralight.core.callbacks.resume import SeedTheTest
from hydralight.core.console import info, quiet_console
from hydralight.core.errors import UserError
from hydralight.core.runs.trained import (
    load_trained,
    report_ignored,
    run_config,
    trained_data_config,
    typed_overrides,
)
from hydralight.core.trust import allowed

MODEL_IGNORED = "the model is rebuilt from the checkpoint"


def evaluate(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, float]:
    """Test the checkpoint at `cfg.ckpt_path`; returns the test metrics (also written to metrics.json).

    `overrides`: what the user typed (Hydra's, by default), which decides between the run's data and `data=<option>`.
    """
    quiet_console()
    overrides = typed_overrides() if overrides is None else list(overrides)
    info("Loading %s", cfg.ckpt_path)
    allow = allowed(cfg)
    model, task = load_trained(cfg.ckpt_path, allow)
    info("Model: %s", task.module)
    report_ignored(overrides, "model", MODEL_IGNORED)
    data_cfg = trained_data_config(cfg, cfg.ckpt_path, task, overrides, allow)
    # Seeded right before the data is built, as train seeds it: a data module that draws its data from the global
    # RNG (Lightning's BoringDataModule) gets the data it was tested on, however much RNG loading the model used.
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(data_cfg)
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(cfg.get("callbacks"), cfg.paths.output_dir, has_logger=bool(loggers))
    callbacks.append(SeedTheTest(run_seed_for_test(cfg, overrides)))  # where train's own test started from
    trainer = build_trainer(cfg, callbacks, loggers)
    try:
        trainer.test(model, datamodule=datamodule)
    except (IndexError, RuntimeError, ValueError) as error:
        chosen = [override for override in overrides if override.split("=", 1)[0].lstrip("+") == "data"]
        if not chosen:  # the data it was trained on: a failure there is not a mismatch the user chose
            raise
        raise UserError(
            f"{chosen[-1]}: {task.module} cannot read this data ({type(error).__name__}: "
            f"{(str(error).strip().splitlines() or [''])[0][:160]}). Evaluate it on the data it was trained on "
            "(no data=), or on data of the same kind."
        ) from error
    close_run()
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def run_seed_for_test(cfg: DictConfig, overrides: Sequence[str]) -> int:
    """The seed the test loop starts from: the training run's (its own test after training started from it, so a
    module that draws random numbers in its test reproduces that test), unless `seed=` is given."""
    found = run_config(cfg.ckpt_path)
    typed = any(override.split("=", 1)[0] == "seed" for override in overrides)
    return cfg.seed if typed or found is None else found[1].get("seed", cfg.seed)
