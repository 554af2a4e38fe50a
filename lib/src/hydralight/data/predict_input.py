"""A file of raw samples for predict (`input=<file>`, an in-memory data module's `predict_path`), read the way the
training data are: a .pt tensor, an .npy array or a .csv of numbers, checked (shape, finite values, labels) and
transformed like the training data. Imported by predict only."""

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from hydralight.core.errors import UserError

PREDICT_SUFFIXES = (".pt", ".npy", ".csv")


class PredictInputError(UserError):
    """A predict file that cannot be used; `problem` says why without naming the key, so predict.py can name
    the one the user typed (`input=`)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"data.predict_path={str(path)!r} {problem}")
        self.path, self.problem = str(path), problem


def _read_csv(path: Path) -> np.ndarray:
    """Rows of numbers; a first line that is not all numbers is a header and is skipped. A bad value is named by its
    line in the file (counting from 1, the header included) and its column, as an editor shows them."""
    with open(path, encoding="utf-8", errors="replace") as file:
        first = file.readline()
    try:
        [float(value) for value in first.strip().split(",") if value.strip()]
        header = 0
    except ValueError:
        header = 1
    try:
        return np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2, skiprows=header)
    except ValueError as error:
        found = re.search(r"(.*) at row (\d+), column (\d+)", str(error))
        where = f"{found[1]} on line {int(found[2]) + 1 + header}, column {found[3]}" if found else str(error)
        raise PredictInputError(path, f"is not a CSV of numbers: {where}.") from error


def read_samples(path: str | Path) -> torch.Tensor:
    """A .pt tensor (read with weights_only=True), an .npy array (no pickles) or a .csv of numbers, as floats."""
    path = Path(path)
    if path.suffix not in PREDICT_SUFFIXES:
        raise PredictInputError(path, f"is of an unknown file type. Use one of: {', '.join(PREDICT_SUFFIXES)}")
    if not path.is_file():
        raise PredictInputError(path, "is no such file.")
    try:
        if path.suffix == ".pt":
            data = torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            data = _read_csv(path)
    except UserError:
        raise
    except Exception as error:  # a corrupt or foreign file: the user needs the path and the reason
        reason = (str(error).strip().splitlines() or [""])[0]
        raise PredictInputError(path, f"could not be read ({type(error).__name__}: {reason}).") from error
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, torch.Tensor):
        raise PredictInputError(path, f"holds a {type(data).__name__}; save one tensor of samples instead.")
    return data.float()


def read_predict_file(
    path: str | Path,
    shape: tuple[int, ...],
    num_classes: int,
    transform: Callable[[torch.Tensor], torch.Tensor],
    reader: str,
) -> TensorDataset:
    """The samples of `path` (and their labels, from a last extra column) as `reader` (a data module's class name)
    reads them: samples of `shape`, labels 0..num_classes-1, checked, then `transform`ed like its training data."""
    data, labels = read_samples(path), None
    size = int(np.prod(shape))
    if data.ndim == 2 and data.shape[1] == size + 1:
        data, labels = data[:, :-1], data[:, -1]
    if data.ndim == 2 and data.shape[1] == size and tuple(data.shape[1:]) != shape:
        data = data.reshape(len(data), *shape)
    if tuple(data.shape[1:]) != shape or len(data) == 0:
        dims = ", ".join(map(str, shape))
        raise PredictInputError(
            path,
            f"has shape {tuple(data.shape)}; {reader} reads (N, {dims}), (N, {size}), or "
            f"(N, {size + 1}) with labels in the last column, N >= 1.",
        )
    finite = torch.isfinite(data.reshape(len(data), -1)).all(dim=1)
    if labels is not None:
        finite &= torch.isfinite(labels)
    if not finite.all():
        bad = (~finite).nonzero().flatten()
        raise PredictInputError(
            path,
            f"has NaN or inf in row {int(bad[0])} (counting from 0, header excluded; rows with NaN or inf: "
            f"{len(bad)} of {len(data)}). Every value must be a finite number.",
        )
    if labels is None:
        return TensorDataset(transform(data))
    valid = (labels == labels.round()) & (labels >= 0) & (labels < num_classes)
    if not valid.all():
        row = int((~valid).nonzero()[0])
        raise PredictInputError(
            path,
            f"has label {labels[row].item():g} in row {row} (its last column); labels are whole numbers "
            f"0..{num_classes - 1}.",
        )
    return TensorDataset(transform(data), labels.long())
