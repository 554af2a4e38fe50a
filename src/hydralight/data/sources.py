"""What `python prepare.py source=...` turns into an on-disk dataset: the embedded digits, a folder of your own
images or arrays (one subfolder per class), or a text (conf/source/).

A source says what its columns are (`columns`: name -> shape and dtype) and yields each split's rows one at a time
(`rows(split)`), so a dataset larger than memory is written without ever being held whole. `description()` is what
prepare.py writes to prepared.json beside the data, where configs read it (`${prepared:<path>,<key>}`).
"""

import tempfile
from collections.abc import Iterator
from importlib import resources
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
    """Rows held as numpy arrays (the embedded digits), split by `split_seed` exactly as DigitsDataModule splits."""

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


def digits(val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0) -> ArraySource:
    """The embedded UCI digits as raw pixel counts 0..16 (uint8, (1, 8, 8)) and labels: the worked example."""
    from hydralight.data.digits import DIGITS_FILE, PIXEL_MAX

    check_fractions(val_fraction, test_fraction)
    with resources.as_file(resources.files("hydralight.data") / DIGITS_FILE) as path:
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


# copier:if gpt_example
class TextSource:
    """A text as windows of `block_size + 1` character ids, one window every `block_size` characters (so each
    next-character pair is in exactly one window), split in order: train, then val, then test.

    The text (Tiny Shakespeare, or every .txt / .txt.gz file under `path`, in name order) is read one file at a time
    and its ids kept in a temporary memory-mapped file, so it need not fit in memory; its sorted characters are the
    vocabulary (`vocab` in prepared.json, which the GPT's config reads).
    """

    def __init__(
        self, path: str | None = None, block_size: int = 64, val_fraction: float = 0.05, test_fraction: float = 0.05
    ) -> None:
        from hydralight.data.shakespeare import read_text

        check_fractions(val_fraction, test_fraction)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise UserError(f"source.block_size={block_size!r} must be a whole number >= 1.")
        self.block_size = block_size
        files = self._files(path)
        chars: set[str] = set()
        length = 0
        for file in files:
            text = read_text(file)
            chars.update(text)
            length += len(text)
        self.vocab = "".join(sorted(chars))
        dtype = np.uint8 if len(self.vocab) <= 256 else np.int32
        self._scratch = tempfile.NamedTemporaryFile(suffix=".ids")  # noqa: SIM115 (lives as long as the source)
        self.ids = np.memmap(self._scratch.name, dtype=dtype, mode="w+", shape=(max(length, 1),))
        index = {char: i for i, char in enumerate(self.vocab)}
        offset = 0
        for file in files:
            text = read_text(file)
            self.ids[offset : offset + len(text)] = np.fromiter(map(index.__getitem__, text), dtype, len(text))
            offset += len(text)
        n_test, n_val = round(length * test_fraction), round(length * val_fraction)
        n_train = length - n_val - n_test
        self.bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, length)}
        for split, (start, stop) in self.bounds.items():
            if stop - start <= block_size:
                raise UserError(
                    f"the {split} text has {stop - start} characters, fewer than source.block_size + 1="
                    f"{block_size + 1}: raise source.{split}_fraction or lower source.block_size."
                )

    @staticmethod
    def _files(path: str | None) -> list[str | None]:
        if path is None:
            return [None]  # read_text's embedded Tiny Shakespeare
        root = Path(path)
        if root.is_file():
            return [str(root)]
        files = sorted(str(file) for file in root.rglob("*") if file.name.endswith((".txt", ".txt.gz")))
        if not files:
            raise UserError(f"source.path={path!r} is no text file and no folder of .txt files.")
        return files

    @property
    def columns(self) -> dict[str, tuple[list[int], str]]:
        return {"ids": ([self.block_size + 1], self.ids.dtype.name)}

    def rows(self, split: str) -> Iterator[Row]:
        start, stop = self.bounds[split]
        for window in range(start, stop - self.block_size, self.block_size):
            yield {"ids": np.asarray(self.ids[window : window + self.block_size + 1])}

    def description(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "block_size": self.block_size}


# copier:endif
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
