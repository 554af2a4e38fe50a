"""callbacks=plots: learning curves and confusion matrices at the end of training, and matplotlib kept optional."""

import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from hydralight.core.build import build_callbacks, build_datamodule, build_loggers, build_trainer
from hydralight.core.callbacks.plots import TrainingPlots, curves_from_history
from hydralight.core.errors import UserError
from hydralight.core.train import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PICTURES = ("learning_curves.png", "confusion_matrix_val.png", "confusion_matrix_test.png")
CLASSIFIER = ("model=image_classifier", "data=images")  # 3 classes; logs <stage>/loss and <stage>/acc


@pytest.fixture
def no_matplotlib(monkeypatch):
    """matplotlib as if it were not installed (torchmetrics, imported earlier, keeps its own reference)."""
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError


def test_plots_callback_writes_three_pngs_into_the_run_dir(make_cfg):
    """train callbacks=plots leaves learning curves and val/test confusion matrices as PNG files in <run dir>/plots."""
    pytest.importorskip("matplotlib")
    cfg = make_cfg(*CLASSIFIER, "callbacks=plots", "trainer.max_epochs=2")
    train(cfg)
    plots = Path(cfg.paths.output_dir) / "plots"
    assert sorted(path.name for path in plots.iterdir()) == sorted(PICTURES)
    for name in PICTURES:
        assert (plots / name).read_bytes()[:8] == PNG_MAGIC, name


def test_a_task_that_is_no_classifier_gets_its_learning_curves_and_says_why_no_more(make_cfg, caplog):
    """The regression's batches hold float targets: no confusion matrix, one line saying why, the curves still."""
    pytest.importorskip("matplotlib")
    cfg = make_cfg("callbacks=plots", "trainer.max_epochs=2")
    with caplog.at_level(logging.INFO, logger="hydralight.core.callbacks.plots"):
        train(cfg)
    assert [path.name for path in (Path(cfg.paths.output_dir) / "plots").iterdir()] == ["learning_curves.png"]
    lines = [record.getMessage() for record in caplog.records if "no confusion matrix" in record.getMessage()]
    assert lines == [
        "callbacks=plots: no confusion matrix for NetRegression: its batches are not (inputs, integer class labels); "
        "it gets its learning curves."
    ]


def test_confusion_matrix_agrees_with_the_logged_accuracy_and_history_is_checkpointed(make_cfg):
    """The test confusion matrix counts every test sample once and its diagonal gives test/acc; the per-epoch
    history is saved in the checkpoint, weights-only loadable."""
    pytest.importorskip("matplotlib")
    cfg = make_cfg(*CLASSIFIER, "callbacks=plots", "trainer.max_epochs=2")
    datamodule = build_datamodule(cfg.data)
    model = instantiate(cfg.model)
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(cfg.get("callbacks"), cfg.paths.output_dir, has_logger=bool(loggers))
    trainer = build_trainer(cfg, callbacks, loggers)
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule)
    (plots,) = [callback for callback in callbacks if isinstance(callback, TrainingPlots)]

    matrix = plots.confusion["test"]
    assert matrix.shape == (3, 3)
    assert matrix.sum() == len(datamodule.splits["test"])  # every test sample once, the short last batch too
    test_acc = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["test/acc"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(test_acc, abs=1e-6)
    assert [row["epoch"] for row in plots.history] == [0.0, 1.0]
    assert {"train/loss", "val/acc"} <= plots.history[-1].keys()

    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["callbacks"]["TrainingPlots"]["history"] == plots.history


def test_learning_curve_rows_hold_their_own_epochs_metrics(make_cfg):
    """Each history row (one per epoch, one point of the learning curves) has that epoch's train and val metrics,
    the values the CSV logger wrote for the same epoch: no curve lags an epoch behind."""
    pytest.importorskip("matplotlib")
    cfg = make_cfg(*CLASSIFIER, "callbacks=plots", "trainer.max_epochs=3", "test=false")
    train(cfg)
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as file:
        logged = [row for row in csv.DictReader(file)]
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    history = last["callbacks"]["TrainingPlots"]["history"]
    assert [row["epoch"] for row in history] == [0.0, 1.0, 2.0]
    for name in ("train/acc", "train/loss", "val/acc", "val/loss"):
        by_epoch = {int(row["epoch"]): float(row[name]) for row in logged if row.get(name)}
        assert [row[name] for row in history] == pytest.approx([by_epoch[e] for e in range(3)]), name
    assert len({row["train/loss"] for row in history}) == 3  # the curve moves every epoch


def test_curves_leave_out_step_and_best_values():
    """Learning curves group epoch metrics by name and stage; *_step and *_best values are not curves."""
    history = [
        {"epoch": 0.0, "train/loss": 2.0, "val/loss": 1.5, "val/acc": 0.5, "val/acc_best": 0.5, "train/loss_step": 9.0},
        {"epoch": 1.0, "train/loss": 1.0, "val/loss": 0.9, "val/acc": 0.7, "val/acc_best": 0.7, "lr-Adam": 0.1},
    ]
    assert curves_from_history(history) == {
        "loss": {"train": [(0.0, 2.0), (1.0, 1.0)], "val": [(0.0, 1.5), (1.0, 0.9)]},
        "acc": {"val": [(0.0, 0.5), (1.0, 0.7)]},
    }


def test_plots_without_matplotlib_stop_before_training_with_the_fix(make_cfg, no_matplotlib):
    """callbacks=plots without matplotlib is a UserError naming the install command, raised before any training."""
    cfg = make_cfg("callbacks=plots")
    with pytest.raises(UserError, match=r"matplotlib.*pip install -e '\.\[plots\]'"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_default_training_needs_no_matplotlib(make_cfg, no_matplotlib):
    """The default config trains and tests with matplotlib unimportable: nothing on that path imports it."""
    cfg = make_cfg()
    train(cfg)
    assert "test/loss" in json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


def test_pictures_are_sent_to_tensorboard(make_cfg):
    """With logger=tensorboard the pictures also land in the event file as images, one tag per picture."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg(*CLASSIFIER, "callbacks=plots", "logger=tensorboard")
    train(cfg)
    tags = set()
    for events in (Path(cfg.paths.output_dir) / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["images"])
    assert tags == {Path(name).stem for name in PICTURES}
