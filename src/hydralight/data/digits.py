"""The UCI handwritten digits, shipped inside the package (see DIGITS_LICENSE.md): the default, offline dataset."""

from importlib import resources

import numpy as np
import torch
from torch.utils.data import TensorDataset

from hydralight.data.base import InMemoryDataModule, split_indices

DIGITS_FILE = "digits.csv.gz"
PIXEL_MAX = 16.0


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 images as float tensors (N, 1, 8, 8) scaled to [0, 1], and their labels (N,)."""
    with resources.as_file(resources.files("hydralight.data") / DIGITS_FILE) as path:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :-1] / PIXEL_MAX).reshape(-1, 1, 8, 8)
    labels = torch.from_numpy(table[:, -1]).long()
    return images, labels


class DigitsDataModule(InMemoryDataModule):
    """Train/val/test split of the digits by `split_seed`, the same split in every run."""

    def __init__(self, val_fraction: float = 0.1, test_fraction: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    def load_splits(self) -> dict[str, TensorDataset]:
        images, labels = load_digits()
        n = len(labels)
        test, val, train = split_indices(
            n, [round(n * self.test_fraction), round(n * self.val_fraction)], self.split_seed
        )
        return {name: TensorDataset(images[idx], labels[idx]) for name, idx in
                {"train": train, "val": val, "test": test}.items()}  # fmt: skip
