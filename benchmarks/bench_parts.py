"""What the benchmark plugs into the real training path through the config: a timing callback and a synthetic
MNIST-shaped dataset. `bench.py` puts this folder on PYTHONPATH so `_target_: bench_parts.X`
resolves in `train.py`'s process.
"""

import json
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import TensorDataset

from hydralight.data.base import InMemoryDataModule, split_indices


class EpochTimer(Callback):
    """Wall-clock times of each train-epoch start, the end of training and the end of the first training step.

    An epoch runs from one `on_train_epoch_start` to the next (the last one to `on_train_end`), so it holds the
    training batches, the validation loop and whatever callbacks do at epoch end (checkpoints, logging). The process
    CPU time is recorded beside the wall time: with one thread it hardly moves when other jobs load the machine.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.epoch_starts: list[float] = []
        self.cpu_epoch_starts: list[float] = []
        self.first_step: float | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epoch_starts.append(time.time())
        self.cpu_epoch_starts.append(time.process_time())

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.first_step is None:
            self.first_step = time.time()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        train_end, cpu_train_end = time.time(), time.process_time()
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        splits = getattr(datamodule, "splits", {})
        record = {
            "epoch_starts": self.epoch_starts,
            "train_end": train_end,
            "cpu_epoch_starts": self.cpu_epoch_starts,
            "cpu_train_end": cpu_train_end,
            "first_step": self.first_step,
            "n_train": len(splits["train"]) if "train" in splits else None,
            "n_val": len(splits["val"]) if "val" in splits else None,
            "threads": torch.get_num_threads(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(record))


def synthetic_images(n: int, input_shape: tuple[int, ...], num_classes: int, seed: int) -> TensorDataset:
    """`n` random images in [0, 1] and random labels: MNIST's shape and size without its files."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((n, *input_shape), generator=generator)
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    return TensorDataset(images, labels)


class SyntheticMNISTDataModule(InMemoryDataModule):
    """`size` random 1x28x28 training images (minus `val_size` for validation) and `test_size` test images.

    Takes (and ignores) `data_dir` and `download`, so it drops into conf/data/mnist.yaml by its `_target_` alone.
    """

    def __init__(
        self,
        size: int = 60000,
        val_size: int = 5000,
        test_size: int = 10000,
        data_dir: str | None = None,
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.size, self.val_size, self.test_size = size, val_size, test_size

    def load_splits(self) -> dict[str, TensorDataset]:
        full = synthetic_images(self.size, self.input_shape, self.num_classes, seed=self.split_seed)
        val, train = split_indices(self.size, [self.val_size], self.split_seed)
        images, labels = full.tensors
        test = synthetic_images(self.test_size, self.input_shape, self.num_classes, seed=self.split_seed + 1)
        return {
            "train": TensorDataset(images[train], labels[train]),
            "val": TensorDataset(images[val], labels[val]),
            "test": test,
        }
