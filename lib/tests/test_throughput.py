"""Training throughput and memory (callbacks.throughput, on by default): logged while training on Lightning's log
steps and at each epoch's end, and written to metrics.json, for any batch layout."""

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel
from torch.utils.data import DataLoader

from hydralight.core.train import train
from tests.conftest import TINY, compose_config

OUTSIDE = Path(__file__).resolve().parent / "outside_task"
KEYS = {"train/samples_per_s", "train/step_s", "train/peak_memory_mib"}


def read_metrics(cfg) -> dict[str, float]:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


def assert_positive_finite(metrics: dict[str, float], keys: set[str]) -> None:
    assert keys <= metrics.keys()
    assert all(math.isfinite(metrics[key]) and metrics[key] > 0 for key in keys), {key: metrics[key] for key in keys}


def test_the_classifier_writes_samples_per_s_step_time_and_peak_memory(make_cfg):
    """Digits batches of 64: samples/s x seconds per step is the batch size, and the peak memory is the process's."""
    cfg = make_cfg()
    train(cfg)
    metrics = read_metrics(cfg)
    assert_positive_finite(metrics, KEYS)
    assert "train/tokens_per_s" not in metrics  # the classifier says nothing of tokens
    assert metrics["train/samples_per_s"] * metrics["train/step_s"] == pytest.approx(cfg.data.batch_size, rel=1e-6)
    assert metrics["train/peak_memory_mib"] > 50  # the RSS of a process that imported torch, not bytes or GiB


def test_step_time_is_per_optimizer_step(make_cfg):
    """accumulate_grad_batches=2: one step takes two batches, so samples/s x step time is two batch sizes."""
    cfg = make_cfg("accumulate_grad_batches=2")
    train(cfg)
    metrics = read_metrics(cfg)
    assert metrics["train/samples_per_s"] * metrics["train/step_s"] == pytest.approx(2 * cfg.data.batch_size, rel=1e-6)


# copier:if gpt_example
def test_the_gpt_writes_tokens_per_s_as_samples_per_s_times_the_block_size(make_cfg):
    cfg = make_cfg("experiment=shakespeare_gpt")
    train(cfg)
    metrics = read_metrics(cfg)
    assert_positive_finite(metrics, KEYS | {"train/tokens_per_s"})
    expected = metrics["train/samples_per_s"] * cfg.data.block_size
    assert metrics["train/tokens_per_s"] == pytest.approx(expected, rel=1e-6)


# copier:endif


def test_the_csv_logger_gets_a_row_on_every_log_step_and_at_the_epochs_end(make_cfg):
    """4 steps, trainer.log_every_n_steps=2: rows at steps 2 and 4 (Lightning writes step - 1) and the epoch's row;
    metrics.json holds the epoch's figures."""
    cfg = make_cfg("trainer.log_every_n_steps=2")
    train(cfg)
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row["train/samples_per_s"]]
    assert rows[0].keys() >= KEYS
    assert [int(row["step"]) for row in rows] == [1, 3, 3]
    assert all(float(row[key]) > 0 for row in rows for key in KEYS)
    assert float(rows[-1]["train/samples_per_s"]) == pytest.approx(read_metrics(cfg)["train/samples_per_s"])


# ---------------------------------------------------------------------------------------------------------------
# Tasks whose batches are no (inputs, targets) pair: Lightning's BoringModel (a bare tensor), a dict, an object.


class Opaque:
    """A batch the default batch_size_fn cannot look into."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x


class LayoutData(BoringDataModule):
    """BoringDataModule with training batches of 4, as a bare tensor, a dict {"x": tensor} or an `Opaque`."""

    def __init__(self, layout: str = "tensor") -> None:
        super().__init__()
        self.layout = layout

    def collate(self, rows: list[torch.Tensor]) -> Any:
        x = torch.stack(rows)
        return {"tensor": x, "dict": {"x": x}, "opaque": Opaque(x)}[self.layout]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.random_train, batch_size=4, collate_fn=self.collate)


class LayoutModel(BoringModel):
    """BoringModel on any of LayoutData's training batches; logs val/loss for `monitor`."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x = batch["x"] if isinstance(batch, dict) else batch.x if isinstance(batch, Opaque) else batch
        return super().training_step(x, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", self.step(batch))


def layout_cfg(tmp_path: Path, layout: str):
    return compose_config(
        "train",
        tmp_path / "run",
        (
            *TINY,
            f"hydra.searchpath=[file://{OUTSIDE / 'conf'}]",
            "model=boring",
            "data=boring",
            f"model._target_={__name__}.LayoutModel",
            f"data._target_={__name__}.LayoutData",
            f"+data.layout={layout}",
            "monitor=val/loss",
            "mode=min",
        ),
    )


@pytest.mark.parametrize("layout", ["tensor", "dict"])
def test_a_bare_tensor_or_a_dict_batch_is_counted_by_its_first_tensor(tmp_path, layout):
    cfg = layout_cfg(tmp_path, layout)
    train(cfg)
    metrics = read_metrics(cfg)
    assert_positive_finite(metrics, KEYS)
    assert metrics["train/samples_per_s"] * metrics["train/step_s"] == pytest.approx(4, rel=1e-6)


def test_a_batch_it_cannot_count_still_trains_and_says_so_once(tmp_path, caplog):
    """No samples/s then, but the step time and the memory."""
    cfg = layout_cfg(tmp_path, "opaque")
    with caplog.at_level(logging.INFO, logger="hydralight.core.callbacks.throughput"):
        train(cfg)
    lines = [record.getMessage() for record in caplog.records if "cannot tell" in record.getMessage()]
    assert lines == [
        "callbacks.throughput: cannot tell how many samples a batch of type Opaque holds (first_tensor_length found "
        "none), so train/samples_per_s is not logged for the steps that have one. Set "
        "callbacks.throughput.batch_size_fn to a function that counts them."
    ]
    metrics = read_metrics(cfg)
    assert_positive_finite(metrics, KEYS - {"train/samples_per_s"})
    assert "train/samples_per_s" not in metrics
