"""`monitor=` and `mode=` (top level) decide what "best" is: the checkpoint tested after training, early stopping,
the plateau scheduler and the sweep metric, whatever the order of the callbacks."""

import csv
import json
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from hydralight.core.callbacks.reports import monitoring_checkpoint
from hydralight.core.train import train


def test_monitor_val_loss_min_tests_the_lowest_val_loss_checkpoint_and_returns_it(make_cfg):
    cfg = make_cfg("monitor=val/loss", "mode=min", "trainer.max_epochs=4", "model.lr=0.05")
    returned = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    with (run_dir / "csv" / "metrics.csv").open() as file:
        val_losses = [float(row["val/loss"]) for row in csv.DictReader(file) if row.get("val/loss")]
    assert len(val_losses) == 4
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/loss_best"] == min(val_losses) == returned  # the sweep metric, in mode's direction
    (best,) = [path for path in (run_dir / "checkpoints").glob("epoch*.ckpt")]
    assert torch.load(best, weights_only=True)["epoch"] == val_losses.index(min(val_losses))


def test_the_best_checkpoint_is_the_one_monitoring_the_metric_not_the_first_listed(tmp_path):
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None)
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", mode="min")
    trainer = Trainer(callbacks=[last, best], logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert trainer.checkpoint_callback is last  # Lightning's own pick: the first in the list
    assert monitoring_checkpoint(trainer, "val/loss") is best
    assert monitoring_checkpoint(trainer, "val/acc") is None


def test_mode_and_monitor_reach_every_callback_that_decides_best(make_cfg):
    """(A task's own schedule that reads them, as the classifier's plateau scheduler: its project's tests.)"""
    cfg = make_cfg("monitor=train/loss", "mode=max", "callbacks=early_stopping")
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == ("train/loss", "max")
    assert (cfg.callbacks.early_stopping.monitor, cfg.callbacks.early_stopping.mode) == ("train/loss", "max")
    assert cfg.optimized_metric == "train/loss_best"
