"""The UCI handwritten digits, shipped inside the package (see DIGITS_LICENSE.md): the default, offline dataset."""

from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import TensorDataset

from hydralight.data.base import InMemoryDataModule, split_indices

if TYPE_CHECKING:
    from hydralight.data.sources import ArraySource

DIGITS_FILE = "digits.csv.gz"
PIXEL_MAX = 16.0


def scale_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Raw UCI pixel counts 0..16 as model inputs in [0, 1]: for the training data and for predict files alike."""
    return pixels / PIXEL_MAX


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 images as float tensors (N, 1, 8, 8) scaled to [0, 1], and their labels (N,)."""
    with resources.as_file(resources.files("my_project.data") / DIGITS_FILE) as path:
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


def source(val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0) -> "ArraySource":
    """`python prepare.py source=digits`: the embedded digits as raw pixel counts 0..16 (uint8, (1, 8, 8)) and
    labels, split by `split_seed` exactly as DigitsDataModule splits them."""
    from hydralight.data.sources import ArraySource, check_fractions  # prepare.py's: not a training run's

    check_fractions(val_fraction, test_fraction)
    with resources.as_file(resources.files("my_project.data") / DIGITS_FILE) as path:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = table[:, -1].astype(np.int64)
    n = len(labels)
    test, val, train = split_indices(n, [round(n * test_fraction), round(n * val_fraction)], split_seed)
    return ArraySource(
        {"image": images, "label": labels},
        {"train": train.numpy(), "val": val.numpy(), "test": test.numpy()},
        {"input_shape": [1, 8, 8], "num_classes": 10, "classes": [str(k) for k in range(10)], "pixel_max": PIXEL_MAX},
    )
