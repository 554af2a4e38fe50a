"""The UCI handwritten digits, shipped inside the package (see DIGITS_LICENSE.md): the default, offline dataset."""

from importlib import resources

import numpy as np
import torch
from torch.utils.data import TensorDataset

from hydralight.data.base import InMemoryDataModule, split_indices

DIGITS_FILE = "digits.csv.gz"
PIXEL_MAX = 16.0


def scale_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Raw UCI pixel counts 0..16 as model inputs in [0, 1]: for the training data and for predict files alike."""
    return pixels / PIXEL_MAX


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 images as float tensors (N, 1, 8, 8) scaled to [0, 1], and their labels (N,)."""
    with resources.as_file(resources.files("hydralight.data") / DIGITS_FILE) as path:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    images = scale_pixels(torch.from_numpy(table[:, :-1]).reshape(-1, 1, 8, 8))
    labels = torch.from_numpy(table[:, -1]).long()
    return images, labels


class DigitsDataModule(InMemoryDataModule):
    """Train/val/test split of the digits by `split_seed`, the same split in every run. Predict files hold raw UCI
    rows: 64 pixel counts 0..16, optionally a 65th column of labels, as in the embedded digits.csv.gz."""

    def __init__(self, val_fraction: float = 0.1, test_fraction: float = 0.2, **kwargs) -> None:
        for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
                raise ValueError(f"{name} must be a fraction of the data in [0, 1), got {fraction!r}")
        if val_fraction + test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1 to leave samples to train on, got "
                f"{val_fraction!r} + {test_fraction!r}"
            )
        super().__init__(**kwargs)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        return scale_pixels(raw)

    def load_splits(self) -> dict[str, TensorDataset]:
        images, labels = load_digits()
        n = len(labels)
        test, val, train = split_indices(
            n, [round(n * self.test_fraction), round(n * self.val_fraction)], self.split_seed
        )
        return {name: TensorDataset(images[idx], labels[idx]) for name, idx in
                {"train": train, "val": val, "test": test}.items()}  # fmt: skip
