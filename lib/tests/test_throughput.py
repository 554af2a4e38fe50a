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

KEYS = {"train/samples_per_s", "train/step_s", "train/peak_memory_mib"}


def read_metrics(cfg) -> dict[str, float]:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


def assert_positive_finite(metrics: dict[str, float], keys: set[str]) -> None:
    assert keys <= metrics.keys()
    assert all(math.isfinite(metrics[key]) and metrics[key] > 0 for key in keys), {key: metrics[key] for key in keys}


def test_a_run_writes_samples_per_s_step_time_and_peak_memory(make_cfg):
    """Batches of 16: samples/s x seconds per step is the batch size, and the peak memory is the process's."""
    cfg = make_cfg()
    train(cfg)
    metrics = read_metrics(cfg)
    assert_positive_finite(metrics, KEYS)
    assert "train/tokens_per_s" not in metrics  # no length_fn: nothing said of tokens
    assert metrics["train/samples_per_s"] * metrics["train/step_s"] == pytest.approx(cfg.data.batch_size, rel=1e-6)
    assert metrics["train/peak_memory_mib"] > 50  # the RSS of a process that imported torch, not bytes or GiB


def test_step_time_is_per_optimizer_step(make_cfg):
    """accumulate_grad_batches=2: one step takes two batches, so samples/s x step time is two batch sizes."""
    cfg = make_cfg("accumulate_grad_batches=2")
    train(cfg)
    metrics = read_metrics(cfg)
    assert metrics["train/samples_per_s"] * metrics["train/step_s"] == pytest.approx(2 * cfg.data.batch_size, rel=1e-6)


def test_length_fn_writes_items_per_s_as_samples_per_s_times_each_samples_length(make_cfg):
    """length_fn=first_tensor_numel counts the elements of a batch's first tensor (the tokens of (B, T) input ids,
    here the 4 features of each sample), under the name items_name gives them."""
    length_fn = "{_target_:hydra.utils.get_method,path:hydralight.core.callbacks.reports.first_tensor_numel}"
    cfg = make_cfg(f"callbacks.throughput.length_fn={length_fn}", "callbacks.throughput.items_name=features")
    train(cfg)
    metrics = read_metrics(cfg)
    assert_positive_finite(metrics, KEYS | {"train/features_per_s"})
    expected = metrics["train/samples_per_s"] * cfg.data.in_features
    assert metrics["train/features_per_s"] == pytest.approx(expected, rel=1e-6)


def test_the_csv_logger_gets_a_row_on_every_log_step_and_at_the_epochs_end(make_cfg):
    """4 steps, trainer.log_every_n_steps=2: rows at steps 2 and 4 (Lightning writes step - 1) and the epoch's row;
    metrics.json holds the epoch's figures."""
    cfg = make_cfg("trainer.log_every_n_steps=2", "data.batch_size=8")  # 32 training samples: 4 steps
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


def layout_cfg(make_cfg, tmp_path: Path, layout: str):
    """model=layout data=layout, from a config dir of their own on Hydra's search path."""
    for group, name in (("model", "LayoutModel"), ("data", "LayoutData")):
        (tmp_path / "layout" / group).mkdir(parents=True, exist_ok=True)
        (tmp_path / "layout" / group / "layout.yaml").write_text(f"_target_: {__name__}.{name}\n")
    return make_cfg(
        f"hydra.searchpath=[file://{tmp_path / 'layout'}]",
        "model=layout",
        "data=layout",
        f"+data.layout={layout}",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
    )


@pytest.mark.parametrize("layout", ["tensor", "dict"])
def test_a_bare_tensor_or_a_dict_batch_is_counted_by_its_first_tensor(make_cfg, tmp_path, layout):
    cfg = layout_cfg(make_cfg, tmp_path, layout)
    train(cfg)
    metrics = read_metrics(cfg)
    assert_positive_finite(metrics, KEYS)
    assert metrics["train/samples_per_s"] * metrics["train/step_s"] == pytest.approx(4, rel=1e-6)


def test_a_batch_it_cannot_count_still_trains_and_says_so_once(make_cfg, tmp_path, caplog):
    """No samples/s then, but the step time and the memory."""
    cfg = layout_cfg(make_cfg, tmp_path, "opaque")
    with caplog.at_level(logging.INFO, logger="hydralight.core.callbacks.reports"):
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
