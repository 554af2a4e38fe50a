"""What `python prepare.py source=...` turns into an on-disk dataset (conf/source/): rows held in arrays, or a
folder of your own images or arrays (one subfolder per class). A project adds its own sources beside these.

A source says what its columns are (`columns`: name -> shape and dtype) and yields each split's rows one at a time
(`rows(split)`), so a dataset larger than memory is written without ever being held whole. `description()` is what
prepare.py writes to prepared.json beside the data, where configs read it (`${prepared:<path>,<key>}`).
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hydralight.core.errors import UserError
from hydralight.data.base import split_indices

Row = dict[str, Any]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES = (".npy",)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
            raise UserError(f"source.{name}={fraction!r} must be a fraction of the data in (0, 1).")
    if val_fraction + test_fraction >= 1:
        raise UserError(
            f"source.val_fraction + source.test_fraction = {val_fraction!r} + {test_fraction!r} must be < 1 to leave "
            "rows to train on."
        )


class ArraySource:
    """Rows held as numpy arrays, with each split's row indices and what prepared.json says besides the columns."""

    def __init__(self, columns: dict[str, np.ndarray], splits: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.arrays, self.splits, self.extra = columns, splits, extra

    @property
    def columns(self) -> dict[str, tuple[list[int], str]]:
        return {name: (list(array.shape[1:]), array.dtype.name) for name, array in self.arrays.items()}

    def rows(self, split: str) -> Iterator[Row]:
        for index in self.splits[split]:
            yield {name: array[index] for name, array in self.arrays.items()}

    def description(self) -> dict[str, Any]:
        return dict(self.extra)


class FolderSource:
    """A folder with one subfolder per class, each holding images (read with Pillow) or .npy arrays of one shape:
    the layout of torchvision's ImageFolder. Labels are the subfolders in name order. Images become uint8
    (channels, height, width); `mode` (e.g. L, RGB) converts them and `size` ([height, width]) resizes them, else
    every file must already match the first. The files are split at random by `split_seed`."""

    def __init__(
        self,
        path: str,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        mode: str | None = None,
        size: list[int] | None = None,
    ) -> None:
        check_fractions(val_fraction, test_fraction)
        root = Path(path)
        if not root.is_dir():
            raise UserError(f"source.path={path!r} is no folder. Give a folder with one subfolder per class.")
        self.classes = sorted(child.name for child in root.iterdir() if child.is_dir())
        self.files = [
            (file, label)
            for label, name in enumerate(self.classes)
            for file in sorted((root / name).rglob("*"))
            if file.suffix.lower() in IMAGE_SUFFIXES + ARRAY_SUFFIXES
        ]
        labelled = {label for _, label in self.files}
        empty = [name for label, name in enumerate(self.classes) if label not in labelled]
        if empty and len(self.classes) >= 2:  # a class no sample is labelled with: a model with a dead output
            raise UserError(
                f"source.path={path!r}: the class folder(s) {', '.join(empty)} hold no image "
                f"({', '.join(IMAGE_SUFFIXES)}) or .npy array. Add its files, or remove the folder."
            )
        if len(self.classes) < 2 or not self.files:
            raise UserError(
                f"source.path={path!r} needs one subfolder per class (at least 2) holding images "
                f"({', '.join(IMAGE_SUFFIXES)}) or .npy arrays; it has {len(self.classes)} subfolders and "
                f"{len(self.files)} such files."
            )
        self.mode, self.size = mode, tuple(size) if size else None
        self.shape, self.dtype = self._read(self.files[0][0]).shape, self._read(self.files[0][0]).dtype
        n = len(self.files)
        test, val, train = split_indices(n, [round(n * test_fraction), round(n * val_fraction)], split_seed)
        self.splits = {"train": train.tolist(), "val": val.tolist(), "test": test.tolist()}
        for split, indices in self.splits.items():
            if not indices:
                raise UserError(f"the {split} split of {path!r} is empty ({n} files): add files or raise the fraction.")

    def _read(self, file: Path) -> np.ndarray:
        try:
            return self._read_array(file)
        except (OSError, ValueError, SyntaxError) as error:  # PIL: truncated, unidentified or corrupt; numpy: bad .npy
            raise UserError(
                f"source.path: {file} cannot be read ({type(error).__name__}: {error}). Fix or remove the file."
            ) from error

    def _read_array(self, file: Path) -> np.ndarray:
        if file.suffix.lower() in ARRAY_SUFFIXES:
            return np.load(file, allow_pickle=False)
        try:
            from PIL import Image
        except ImportError as error:
            raise UserError("reading images needs Pillow: pip install -e '.[ondisk]'") from error
        with Image.open(file) as image:
            image = image.convert(self.mode) if self.mode else image
            image = image.resize(self.size[::-1]) if self.size else image
            array = np.asarray(image, dtype=np.uint8)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # (channels, height, width)

    @property
    def columns(self) -> dict[str, tuple[list[int], str]]:
        return {"image": (list(self.shape), self.dtype.name), "label": ([], "int64")}

    def rows(self, split: str) -> Iterator[Row]:
        for index in self.splits[split]:
            file, label = self.files[index]
            array = self._read(file)
            if array.shape != self.shape:
                hint = (
                    "" if file.suffix in ARRAY_SUFFIXES else " (source.size=[H,W] resizes, source.mode=L|RGB converts)"
                )
                raise UserError(
                    f"{file} has shape {tuple(array.shape)}, the first file {self.files[0][0]} has "
                    f"{tuple(self.shape)}: every sample must have one shape{hint}."
                )
            yield {"image": array.astype(self.dtype, copy=False), "label": label}

    def description(self) -> dict[str, Any]:
        is_images = self.files[0][0].suffix.lower() in IMAGE_SUFFIXES
        extra = {"pixel_max": 255} if is_images else {}
        return {"input_shape": list(self.shape), "num_classes": len(self.classes), "classes": self.classes, **extra}
