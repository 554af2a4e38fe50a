"""MNIST read from the standard IDX files; downloaded only when asked to and torchvision is installed."""

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from hydralight.core.errors import UserError
from hydralight.data.base import InMemoryDataModule, split_indices

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_UBYTE = 0x08  # the only element type MNIST uses
PIXEL_MAX = 255.0


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed) of `ndim` dimensions into a uint8 array of its shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:  # BadGzipFile is an OSError; EOFError: a .gz cut short
        raise UserError(f"{path} could not be read ({error}): replace it with a complete copy.") from error
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise UserError(f"{path} is truncated: {len(data)} bytes, shorter than its IDX header.")
    zero, dtype, file_ndim = struct.unpack(">HBB", data[:4])
    if (zero, dtype, file_ndim) != (0, IDX_UBYTE, ndim):
        raise UserError(
            f"{path} is not the IDX file expected here: magic 0x{data[:4].hex()}, expected 0x000008{ndim:02x}."
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    body = np.frombuffer(data, dtype=np.uint8, offset=header_size)
    if body.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: header says {shape}, found {body.size} values.")
    return body.reshape(shape)


def find_idx(data_dir: Path, name: str) -> Path | None:
    """Where torchvision puts the files (`MNIST/raw`) or `data_dir` itself; plain or .gz."""
    for folder in (data_dir / "MNIST" / "raw", data_dir):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


class MNISTDataModule(InMemoryDataModule):
    """60,000 training images (minus `val_size` for validation) and the official 10,000 test images. Predict files
    hold raw pixels 0..255: 784 per row (or (N, 1, 28, 28)), optionally a 785th column of labels."""

    def __init__(self, data_dir: str = "data", download: bool = False, val_size: int = 5000, **kwargs) -> None:
        kwargs.setdefault("input_shape", (1, 28, 28))  # the base's default is the digits' 8x8
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir)
        self.download = download
        self.val_size = val_size

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        return raw / PIXEL_MAX

    def missing_files(self) -> list[str]:
        return [name for pair in IDX_FILES.values() for name in pair if find_idx(self.data_dir, name) is None]

    def prepare_data(self) -> None:
        missing = self.missing_files()
        if not missing:
            return
        if not self.download:
            raise UserError(
                f"data.data_dir={str(self.data_dir)!r} has no MNIST files (missing: {', '.join(missing)}). "
                "Put the IDX files there, or set data.download=true (needs network and torchvision)."
            )
        try:
            from torchvision.datasets import MNIST
        except ImportError as error:
            raise UserError("data.download=true needs torchvision: pip install -e '.[mnist-download]'") from error
        for train in (True, False):
            MNIST(str(self.data_dir), train=train, download=True)

    def _read(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images_name, labels_name = IDX_FILES[split]
        paths = [find_idx(self.data_dir, name) for name in (images_name, labels_name)]
        if None in paths:
            self.prepare_data()  # raises the clear message when the files are missing
            paths = [find_idx(self.data_dir, name) for name in (images_name, labels_name)]
        images, labels = read_idx(paths[0], ndim=3), read_idx(paths[1], ndim=1)
        if len(images) != len(labels):
            raise UserError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels.")
        images = self.transform(torch.from_numpy(images.astype(np.float32)).unsqueeze(1))
        return images, torch.from_numpy(labels.astype(np.int64))

    def load_splits(self) -> dict[str, TensorDataset]:
        train_images, train_labels = self._read("train")
        val, train = split_indices(len(train_labels), [self.val_size], self.split_seed)
        return {
            "train": TensorDataset(train_images[train], train_labels[train]),
            "val": TensorDataset(train_images[val], train_labels[val]),
            "test": TensorDataset(*self._read("test")),
        }
