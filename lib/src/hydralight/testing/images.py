"""A tiny image classification task, for the machinery's tests where the regression has no classes, no raw samples
or no files: images of whole pixel values 0..PIXEL_MAX (as a dataset's files hold them) whose class can be learnt,
held in memory by an InMemoryDataModule that scales them (ImageData) or written to disk by `python prepare.py
source=images` (image_source), and a module that logs `<stage>/loss` and `<stage>/acc` and predicts a class per
sample (ImageClassifier)."""

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from hydralight.data.base import InMemoryDataModule, split_indices

if TYPE_CHECKING:
    from hydralight.data.sources import ArraySource

PIXEL_MAX = 16  # the raw pixels' largest value; the model sees pixels / PIXEL_MAX


def random_images(
    n_samples: int, input_shape: Sequence[int] = (1, 8, 8), num_classes: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`n_samples` random uint8 images of `input_shape` (pixels 0..PIXEL_MAX) and int64 labels: the class of an image
    is the brightest of `num_classes` equal runs of its pixels, so a module can learn it."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, PIXEL_MAX + 1, size=(n_samples, *input_shape), dtype=np.uint8)
    runs = np.array_split(images.reshape(n_samples, -1).astype(np.int64), num_classes, axis=1)
    labels = np.stack([run.sum(axis=1) for run in runs], axis=1).argmax(axis=1)
    return images, labels.astype(np.int64)


def split_rows(n: int, val_fraction: float, test_fraction: float, split_seed: int) -> dict[str, Tensor]:
    """Each split's row indices: a permutation by `split_seed` cut into test, val and (the rest) train."""
    test, val, train = split_indices(n, [round(n * test_fraction), round(n * val_fraction)], split_seed)
    return {"train": train, "val": val, "test": test}


class ImageData(InMemoryDataModule):
    """`random_images(n_samples, seed=seed)` split by `split_seed`; the splits and predict files hold raw pixels,
    which `transform` scales to [0, 1]."""

    def __init__(
        self,
        n_samples: int = 150,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        input_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 3,
        **kwargs,
    ) -> None:
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)
        self.n_samples, self.seed = n_samples, seed
        self.val_fraction, self.test_fraction = val_fraction, test_fraction

    def transform(self, raw: Tensor) -> Tensor:
        return raw / PIXEL_MAX

    def load_splits(self) -> dict[str, TensorDataset]:
        images, labels = random_images(self.n_samples, self.input_shape, self.num_classes, self.seed)
        images, labels = self.transform(torch.from_numpy(images).float()), torch.from_numpy(labels)
        rows = split_rows(self.n_samples, self.val_fraction, self.test_fraction, self.split_seed)
        return {name: TensorDataset(images[indices], labels[indices]) for name, indices in rows.items()}


def image_source(
    n_samples: int = 150,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    input_shape: Sequence[int] = (1, 8, 8),
    num_classes: int = 3,
) -> "ArraySource":
    """`python prepare.py source=images`: ImageData's raw images and labels, split exactly as it splits them."""
    from hydralight.data.sources import ArraySource, check_fractions

    check_fractions(val_fraction, test_fraction)
    images, labels = random_images(n_samples, input_shape, num_classes, seed)
    rows = split_rows(n_samples, val_fraction, test_fraction, split_seed)
    classes = [f"class_{k}" for k in range(num_classes)]
    return ArraySource(
        {"image": images, "label": labels},
        {name: indices.numpy() for name, indices in rows.items()},
        {"input_shape": list(input_shape), "num_classes": num_classes, "classes": classes, "pixel_max": PIXEL_MAX},
    )


class ImageClassifier(LightningModule):
    """Flatten -> hidden -> num_classes logits, fit by cross-entropy with SGD; logs `<stage>/loss` and `<stage>/acc`;
    predicts each sample's class, its probability, its label when the batch has one, and every class's probability."""

    def __init__(
        self, input_shape: Sequence[int] = (1, 8, 8), num_classes: int = 3, hidden: int = 16, lr: float = 0.1
    ) -> None:
        super().__init__()
        input_shape = [int(size) for size in input_shape]
        self.save_hyperparameters({"input_shape": input_shape, "num_classes": num_classes, "hidden": hidden, "lr": lr})
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.Tanh(), nn.Linear(hidden, num_classes)
        )
        self.example_input_array = torch.zeros(1, *input_shape)  # export's sample

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _step(self, batch: Sequence[Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        accuracy = (logits.argmax(dim=-1) == y).float().mean()
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Sequence[Tensor], batch_idx: int) -> dict[str, Tensor]:
        probabilities = self(batch[0]).softmax(dim=-1)
        confidence, prediction = probabilities.max(dim=-1)
        labels = {"label": batch[1]} if len(batch) > 1 else {}
        return {"prediction": prediction, "confidence": confidence, **labels, "prob": probabilities}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
