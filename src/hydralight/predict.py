"""The predict task: a checkpoint's predictions for a file of inputs (or the data module's own predict split), as CSV.

The checkpoint's own task decides everything: the data module it was trained on reads the file (`input=` sets its
`predict_path`) and turns raw samples into model inputs exactly as it does for training (digits: pixel counts
0..16 divided by 16), and the module's `predict_step`, run by `trainer.predict`, decides what a row holds. Each
per-sample output becomes a column (a vector per sample: name_0 ... name_k).
"""

import csv
import inspect
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, open_dict
from torch import Tensor

from hydralight.build import build_datamodule, info, quiet_console
from hydralight.checkpoints import checked_class, load_trained, trained_data_config, typed_overrides
from hydralight.data.base import PredictInputError
from hydralight.errors import UserError
from hydralight.outputs import check_output, write_atomically

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")
PREDICT_PATH = "predict_path"  # the data module argument `input=` sets


def accepts(cls: type, name: str) -> bool:
    """Whether `cls(name=...)` binds, following `**kwargs` up to the base classes that take them."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters
        if name in parameters:
            return True
        if not any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
            return False
    return False


def accelerator(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device='cuda': this machine has no CUDA GPU. Choose one of: auto, cpu")
    return device


def _per_sample(value: object, name: str) -> Tensor | list:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, list | tuple):
        return list(value)
    raise TypeError(f"predict_step returned {type(value).__name__} for {name!r}; return tensors or lists per sample")


def join_outputs(batches: Sequence[object]) -> dict[str, Tensor | list]:
    """`trainer.predict`'s list of per-batch outputs as one column per output: a dict's keys, else `output`."""
    columns: dict[str, list] = {}
    for batch in batches:
        outputs = batch if isinstance(batch, dict) else {"output": batch}
        for name, value in outputs.items():
            columns.setdefault(name, []).append(_per_sample(value, name))
    return {
        name: torch.cat(parts) if isinstance(parts[0], Tensor) else [item for part in parts for item in part]
        for name, parts in columns.items()
    }


def _cells(value: Tensor | list, name: str, count: int) -> tuple[list[str], list[list[object]]]:
    """The header names and the per-row cells of one output: a vector per sample spreads over name_0 ... name_k."""
    if isinstance(value, list):
        return [name], [[item] for item in value]
    vector = value.ndim > 1
    value = value.reshape(count, -1)
    floating = value.is_floating_point()
    rows = [[f"{item:.6g}" if floating else item for item in row] for row in value.tolist()]
    return ([f"{name}_{k}" for k in range(value.shape[1])] if vector else [name]), rows


def write_csv(path: Path, columns: dict[str, Tensor | list]) -> None:
    """index, then every output column, one row per sample."""
    count = len(next(iter(columns.values())))
    header, cells = ["index"], [[index] for index in range(count)]
    for name, value in columns.items():
        if len(value) != count:
            raise ValueError(f"predict_step output {name!r} has {len(value)} samples, the others {count}")
        names, rows = _cells(value, name, count)
        header += names
        for row, extra in zip(cells, rows, strict=True):
            row += extra
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(cells)


def predict(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, float]:
    """Predict per `cfg`; returns {"count": N} and, when the inputs are labelled, {"accuracy": ...}."""
    quiet_console()
    overrides = typed_overrides() if overrides is None else list(overrides)
    output = check_output(cfg.output, cfg.get("overwrite", False), cfg.ckpt_path, example="predictions.csv")
    info("Loading %s", cfg.ckpt_path)
    model, task = load_trained(cfg.ckpt_path)
    info("Model: %s", task.module)
    data = trained_data_config(cfg, cfg.ckpt_path, task, overrides)
    if cfg.input:
        data_class = checked_class(data._target_, LightningDataModule, "the data config")
        if not accepts(data_class, PREDICT_PATH):
            raise UserError(
                f"input={cfg.input!r}: {data_class.__name__} takes no {PREDICT_PATH} argument, so it cannot read "
                "input files. Give it one (see hydralight.data.InMemoryDataModule), or input=null for its own "
                "predict_dataloader."
            )
        with open_dict(data):
            data[PREDICT_PATH] = str(cfg.input)
    datamodule = build_datamodule(data)
    if not is_overridden("predict_dataloader", datamodule, LightningDataModule):
        raise UserError(
            f"{type(datamodule).__name__} has no predict_dataloader, so predict.py has nothing to predict on. "
            "Implement it in the data module (Lightning's hook), or choose another with data=<option>."
        )
    trainer = Trainer(
        accelerator=accelerator(cfg.device),
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=cfg.paths.output_dir,
    )
    try:
        batches = trainer.predict(model, datamodule=datamodule)
    except PredictInputError as error:
        if not cfg.input:
            raise
        raise UserError(f"input={cfg.input!r} {error.problem}") from error  # the key the user typed
    if not batches:
        raise UserError(f"{type(datamodule).__name__}'s predict_dataloader is empty: nothing to predict.")
    columns = join_outputs(batches)
    count = len(next(iter(columns.values())))
    info("Input: %s (%d samples)", cfg.input or f"the predict split of {data._target_}", count)
    write_atomically(output, lambda path: write_csv(path, columns), overwrite=bool(cfg.get("overwrite", False)))
    result = {"count": float(count)}
    if "label" in columns and "prediction" in columns:
        correct = torch.as_tensor(columns["prediction"]) == torch.as_tensor(columns["label"])
        result["accuracy"] = float(correct.float().mean())
    accuracy = f" (accuracy {result['accuracy']:.4f} against the inputs' labels)" if "accuracy" in result else ""
    info("Wrote %d predictions to %s%s", count, output, accuracy)
    return result
