"""The predict task: a checkpoint's predictions for a file of inputs (or the data module's own predict split), as CSV;
or, with `prompt=`, the module's continuation of a prompt, as a text file.

The checkpoint's own task decides everything: the data module it was trained on reads the file (`input=` sets its
`predict_path`) and turns raw samples into model inputs exactly as it does for training (digits: pixel counts
0..16 divided by 16), and the module's `predict_step`, run by `trainer.predict`, decides what a row holds. Each
per-sample output becomes a column (a vector per sample: name_0 ... name_k).

`prompt=<text>` reads no data: it calls the module's `predict_from_prompt(prompt, **prompt_kwargs)` hook (PROMPT_HOOK),
which returns the text to write. `prompt_kwargs` (conf/predict.yaml) are the options the user set, each checked
against the hook's signature, so a module that takes no such option says so in one line.
"""

import csv
import inspect
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, open_dict
from torch import Tensor

from hydralight.core.build import build_datamodule
from hydralight.core.console import info, quiet_console
from hydralight.core.errors import UserError
from hydralight.core.runs.outputs import check_output, write_atomically
from hydralight.core.runs.trained import (
    TrainedTask,
    checked_class,
    load_trained,
    report_ignored,
    trained_data_config,
    typed_overrides,
)
from hydralight.core.switch_checks import validate_prompt
from hydralight.core.trust import Allowed, allowed
from hydralight.core.validation import validate_seed
from hydralight.data.predict_input import PredictInputError

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")
PREDICT_PATH = "predict_path"  # the data module argument `input=` sets
PROMPT_HOOK = "predict_from_prompt"  # the module method `prompt=` calls: (prompt: str, **prompt_kwargs) -> str
OUTPUT_FILES = {"inputs": "predictions.csv", "prompt": "generated.txt"}  # in the run dir, when output=null


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


def torch_device(device: str) -> torch.device:
    """`device=` as the torch device a module moves to: auto is a CUDA GPU when there is one."""
    if accelerator(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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


def prompt_hook(model: LightningModule, prompt: str, kwargs: dict[str, object]) -> Callable[..., str]:
    """The module's PROMPT_HOOK, after checking it exists and takes every keyword in `kwargs`."""
    owner = type(model).__name__
    hook = getattr(model, PROMPT_HOOK, None)
    if not callable(hook):
        raise UserError(
            f"prompt={prompt!r}: {owner} has no {PROMPT_HOOK}(prompt, ...) method, so it cannot continue a prompt. "
            "It predicts on inputs: input=<file>, or no input= for its data's predict split."
        )
    parameters = list(inspect.signature(hook).parameters.values())[1:]  # after the prompt
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return hook
    accepted = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name, value in kwargs.items():
        if name not in accepted:
            raise UserError(
                f"{name}={value!r}: {owner}.{PROMPT_HOOK} takes no {name}. It accepts: "
                f"{', '.join(accepted) or 'the prompt alone'}."
            )
    return hook


def predict(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, float]:
    """Predict per `cfg`: on inputs (returns {"count": N}, and {"accuracy": ...} when they are labelled) or, with
    `prompt=`, from the prompt (returns {"characters": N}). Fills `cfg.output` with the file it writes when null."""
    quiet_console()
    overrides = typed_overrides() if overrides is None else list(overrides)
    mode = "inputs" if cfg.get("prompt") is None else "prompt"
    kwargs = validate_prompt(cfg)
    seed = validate_seed(cfg.get("seed", 42))
    if cfg.get("output") is None:
        with open_dict(cfg):
            cfg.output = str(Path(cfg.paths.output_dir) / OUTPUT_FILES[mode])
    output = check_output(cfg.output, cfg.get("overwrite", False), cfg.ckpt_path, example=OUTPUT_FILES[mode])
    info("Loading %s", cfg.ckpt_path)
    allow = allowed(cfg)
    model, task = load_trained(cfg.ckpt_path, allow)
    info("Model: %s", task.module)
    if mode == "prompt":
        return continue_prompt(cfg, model, kwargs, seed, output, overrides)
    return predict_inputs(cfg, model, task, seed, output, overrides, allow)


def continue_prompt(
    cfg: DictConfig,
    model: LightningModule,
    kwargs: dict[str, object],
    seed: int,
    output: Path,
    overrides: Sequence[str],
) -> dict[str, float]:
    """The module's continuation of `prompt=`, written to `output` and printed."""
    report_ignored(overrides, "data", "prompt= continues the prompt alone and reads no data")
    hook = prompt_hook(model, cfg.prompt, kwargs)
    model.to(torch_device(cfg.device)).eval()
    seed_everything(seed, verbose=False)  # right before sampling: the same command writes the same text
    with torch.inference_mode():
        text = hook(cfg.prompt, **kwargs)
    if not isinstance(text, str):
        raise TypeError(f"{type(model).__name__}.{PROMPT_HOOK} returned {type(text).__name__}; it must return str")
    # newline="": the text byte for byte as the module wrote it, on every platform.
    write = lambda path: path.write_text(text, encoding="utf-8", newline="")  # noqa: E731
    write_atomically(output, write, overwrite=bool(cfg.get("overwrite", False)))
    print(text, flush=True)
    info("Wrote %d characters to %s", len(text), output)
    return {"characters": float(len(text))}


def predict_inputs(
    cfg: DictConfig,
    model: LightningModule,
    task: TrainedTask,
    seed: int,
    output: Path,
    overrides: Sequence[str],
    allow: Allowed,
) -> dict[str, float]:
    """`trainer.predict` on `input=` (or the data's predict split), one CSV row per sample."""
    data = trained_data_config(cfg, cfg.ckpt_path, task, overrides, allow)
    if cfg.input:
        data_class = checked_class(data._target_, LightningDataModule, "the data config", allow)
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
        prompts = callable(getattr(model, PROMPT_HOOK, None))
        raise UserError(
            f"{type(datamodule).__name__} has no predict_dataloader, so predict.py has nothing to predict on. "
            + (f"{type(model).__name__} continues prompts: give prompt=<text>. " if prompts else "")
            + "Or implement predict_dataloader in the data module (Lightning's hook), or choose another with "
            "data=<option>."
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
    seed_everything(seed, verbose=False)  # a predict_step that samples draws the same each time
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
