"""The export task: a checkpoint as a file that serves without this project, checked against the checkpoint.

  torchscript       .pt   torch.jit.load(path)(*inputs); also loads in C++ (libtorch). torch >= 2.9 deprecates
                          torch.jit: exported_program is its successor.
  exported_program  .pt2  torch.export.load(path).module()(*inputs)
  onnx              .onnx onnxruntime.InferenceSession(path).run(None, {name: array, ...}); needs
                          pip install -e ".[onnx]"

Every input of the module is exported, as Lightning passes its `example_input_array`: one tensor, a tuple of tensors
(positional arguments) or a dict of tensors (keyword arguments: the file takes `**inputs` then). Inputs are named by
the dict's keys, else by forward's parameter names (the ONNX input names). The batch dimension stays dynamic on every
input. Before returning, the exported file is loaded back and its outputs are compared with the checkpoint's on a
random batch of every input; a difference above `tolerance` is an error.
"""

import inspect
import json
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import Metric

from hydralight.compat.torch import ONNX_REGISTRATION_LOGGER
from hydralight.core.console import info, quiet_console
from hydralight.core.errors import RunStopped, UserError
from hydralight.core.runs.guard import training_started
from hydralight.core.runs.outputs import check_output, write_atomically
from hydralight.core.runs.trained import load_trained
from hydralight.core.trust import allowed

log = logging.getLogger(__name__)
SUFFIXES = {"torchscript": ".pt", "exported_program": ".pt2", "onnx": ".onnx"}
FORMATS = tuple(SUFFIXES)
INPUT_NAME, OUTPUT_NAME = "input", "logits"  # INPUT_NAME: a single input whose forward parameter has no name
Batch = Tensor | tuple[Tensor, ...] | dict[str, Tensor]  # forward's inputs, as Lightning passes example_input_array


class ExportMismatch(RunStopped):
    """The exported file's outputs differ from the checkpoint's beyond `tolerance`: one line, exit 4, and the file and
    export.json are kept to look at."""

    exit_code = 4


def call(function: Callable[..., Any], batch: Batch) -> Any:
    """`function` on `batch` as Lightning calls forward on example_input_array: a dict by keyword, a tuple in order."""
    args, kwargs = _arguments(batch)
    return function(*args, **kwargs)


def _arguments(batch: Batch) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    if isinstance(batch, Mapping):
        return (), dict(batch)
    return (tuple(batch) if isinstance(batch, tuple | list) else (batch,)), {}


def _dynamic_batch(batch: Batch) -> tuple[dict, ...] | dict[str, dict]:
    """Dimension 0 of every input is one dynamic size: the inputs of a batch share it."""
    size = torch.export.Dim("batch", min=1)
    args, kwargs = _arguments(batch)
    return {name: {0: size} for name in kwargs} if kwargs else tuple({0: size} for _ in args)


def _only_metrics(module: nn.Module) -> bool:
    children = list(module.children())
    return isinstance(module, Metric) or (bool(children) and all(_only_metrics(child) for child in children))


class PlainForward(nn.Module):
    """The LightningModule's `forward` on its own modules and tensors, without the LightningModule around them.

    torch.jit.trace probes every attribute of a module, and a LightningModule's Trainer-only properties raise outside
    a Trainer (Lightning's own `to_torchscript` is deprecated and goes in Lightning 2.8). `of` gives it the module's
    own forward, so the traced file keeps forward's parameter names and takes its inputs by keyword too.
    """

    def __init__(self, model: LightningModule) -> None:
        super().__init__()
        for name, child in model.named_children():
            if not _only_metrics(child):  # metrics only count in training and testing; forward never calls them
                self.add_module(name, child)
        for name, parameter in model.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        for name, buffer in model.named_buffers(recurse=False):
            self.register_buffer(name, buffer)

    @classmethod
    def of(cls, model: LightningModule) -> "PlainForward":
        """A PlainForward of `model` whose forward is `type(model).forward`."""
        return type(f"Plain{type(model).__name__}", (cls,), {"forward": type(model).forward})(model)


def export_torchscript(model: LightningModule, example: Batch, path: Path) -> None:
    info("torch.jit is deprecated upstream (torch and Lightning); format=exported_program is its successor.")
    plain = PlainForward.of(model).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=DeprecationWarning)
        if isinstance(example, dict):
            traced = torch.jit.trace(plain, example_kwarg_inputs=example)
        else:
            traced = torch.jit.trace(plain, tuple(example) if isinstance(example, list) else example)
        torch.jit.save(traced, str(path))


def export_program(model: LightningModule, example: Batch, path: Path) -> None:
    args, kwargs = _arguments(example)
    program = torch.export.export(model, args, kwargs, dynamic_shapes=_dynamic_batch(example))
    torch.export.save(program, str(path))


def export_onnx(model: LightningModule, example: Batch, path: Path) -> None:
    missing = [name for name in ("onnx", "onnxscript") if not _importable(name)]
    if missing:
        raise UserError(f"format=onnx needs {' and '.join(missing)}: pip install -e '.[onnx]'")
    # torch.onnx warns once per torchvision operator it cannot register (torchvision is no part of this project), and
    # its graph passes log at INFO: the run's log keeps our own lines.
    noisy = [logging.getLogger(name) for name in (ONNX_REGISTRATION_LOGGER, "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in noisy]
    for logger in noisy:
        logger.setLevel(logging.ERROR)
    args, kwargs = _arguments(example)
    try:
        with warnings.catch_warnings():
            # The inputs share one batch dimension on purpose; torch.onnx says it names it once.
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used", category=UserWarning)
            torch.onnx.export(
                model,
                args,
                str(path),
                kwargs=kwargs or None,
                input_names=list(input_names(model, example)),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=_dynamic_batch(example),
                dynamo=True,
                verbose=False,
            )
    finally:
        for logger, level in zip(noisy, levels, strict=True):
            logger.setLevel(level)


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def run_exported(path: Path, fmt: str, batch: Batch) -> Tensor:
    """The exported file's outputs for `batch` (a tensor, a tuple or a dict, as forward takes it), loaded back the way
    a user would load it."""
    if fmt == "torchscript":
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=DeprecationWarning)
            return call(torch.jit.load(str(path), map_location="cpu"), batch)
    if fmt == "exported_program":
        with torch.inference_mode():
            return call(torch.export.load(str(path)).module(), batch)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    args, kwargs = _arguments(batch)
    feeds = kwargs or dict(zip([node.name for node in session.get_inputs()], args, strict=True))
    return torch.from_numpy(session.run(None, {name: tensor.numpy() for name, tensor in feeds.items()})[0])


EXPORTERS = {"torchscript": export_torchscript, "exported_program": export_program, "onnx": export_onnx}


def input_names(model: LightningModule, batch: Batch) -> tuple[str, ...]:
    """Each input's name, what ONNX files show their users: a dict's keys, else forward's positional parameters (else
    `input`, or `input_0`, `input_1`, ... for a forward of `*args`)."""
    args, kwargs = _arguments(batch)
    if kwargs:
        return tuple(kwargs)
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = list(inspect.signature(type(model).forward).parameters.values())[1:]  # after self
    names = tuple(parameter.name for parameter in parameters if parameter.kind in kinds)
    if len(names) >= len(args):
        return names[: len(args)]
    return (INPUT_NAME,) if len(args) == 1 else tuple(f"{INPUT_NAME}_{i}" for i in range(len(args)))


def example_batch(model: LightningModule, input_shape: Sequence[int] | None = None) -> Batch:
    """The module's `example_input_array` (a tensor, a tuple or a dict of tensors, each (batch, ...)); `input_shape=`
    (one sample's shape) replaces a single input's."""
    owner, example = type(model).__name__, model.example_input_array
    if example is None and not input_shape:
        raise UserError(
            f"input_shape: {owner} has no example_input_array, so one sample's shape is unknown. Give it, "
            "e.g. input_shape=[1,8,8], or set self.example_input_array in the module."
        )
    example = tuple(example) if isinstance(example, list) else example
    tensors = [] if example is None else _checked_tensors(owner, example)
    if not input_shape:
        return example
    if len(tensors) > 1:
        raise UserError(
            f"input_shape={list(input_shape)} applies only to single-input models; {owner} takes {len(tensors)} "
            f"inputs ({', '.join(input_names(model, example))}): set its example_input_array instead."
        )
    dtype = tensors[0].dtype if tensors else torch.float32  # token ids stay integers
    return _repack(example, [torch.zeros(1, *(int(size) for size in input_shape), dtype=dtype)])


def _checked_tensors(owner: str, example: object) -> list[Tensor]:
    """The example's tensors, each with a batch dimension, or one line saying what export takes."""
    args, kwargs = _arguments(example) if isinstance(example, Tensor | tuple | dict) else ((), {})
    tensors = [*args, *kwargs.values()]
    if not tensors or not all(isinstance(tensor, Tensor) and tensor.ndim for tensor in tensors):
        raise UserError(
            f"input_shape: {owner}'s example_input_array ({type(example).__name__}) is not a tensor, a tuple or a "
            "dict of tensors shaped (batch, ...), which export takes. Set one in the module."
        )
    return tensors


def _repack(example: Batch | None, tensors: Sequence[Tensor]) -> Batch:
    """`tensors` in the structure of `example`: a dict by its keys, a tuple, or the one tensor."""
    if isinstance(example, dict):
        return dict(zip(example, tensors, strict=True))
    return tuple(tensors) if isinstance(example, tuple) else tensors[0]


def describe(model: LightningModule, batch: Batch) -> str:
    """`name (batch, 6, 3), ...`: each input's name and shape, for the log."""
    args, kwargs = _arguments(batch)
    shapes = [", ".join(["batch", *map(str, tensor.shape[1:])]) for tensor in (*args, *kwargs.values())]
    return ", ".join(f"{name} ({shape})" for name, shape in zip(input_names(model, batch), shapes, strict=True))


def random_batch(model: LightningModule, example: Batch, size: int, generator: torch.Generator) -> Batch:
    """`size` random samples of every input, shaped and typed as the example's, in the form forward takes them."""
    args, kwargs = _arguments(example)
    pairs = zip(input_names(model, example), (*args, *kwargs.values()), strict=True)
    return _repack(example, [random_input(model, name, tensor, size, generator) for name, tensor in pairs])


def random_input(model: LightningModule, name: str, example: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """`size` random samples like `example`'s: a mask (bool, named *mask*, or integers 0/1 with a 1 in the example, as
    an attention mask of ones is) random 0/1; other floats standard normal; other integers ids (tokens) below
    `ids_below`."""
    shape = (size, *example.shape[1:])
    floating = example.is_floating_point() or example.is_complex()
    values = set() if floating else set(example.unique().tolist())
    if example.dtype == torch.bool or "mask" in name.lower() or (1 in values and values <= {0, 1}):
        return random_mask(shape, generator).to(example.dtype)
    if floating:
        return torch.randn(shape, generator=generator, dtype=example.dtype)
    return torch.randint(ids_below(model, example), shape, generator=generator, dtype=example.dtype)


def random_mask(shape: Sequence[int], generator: torch.Generator) -> Tensor:
    """Random 0/1 with a 1 and (where a row is longer than one) a 0 in every row of the last dimension: a mask of all
    ones passes a module that ignores it, and a row of zeros has nothing to average or attend to."""
    mask = torch.randint(2, tuple(shape), generator=generator)
    rows, length = mask.view(-1, shape[-1]), shape[-1]
    index = torch.arange(len(rows))
    kept = torch.randint(length, (len(rows),), generator=generator)
    rows[index, kept] = 1
    if length > 1:
        rows[index, (kept + torch.randint(1, length, (len(rows),), generator=generator)) % length] = 0
    return mask


def ids_below(model: LightningModule, example: Tensor) -> int:
    """One past the largest integer input drawn. The module's smallest nn.Embedding, when it has one: an id past a
    table is an index error, not a check, and finding which table reads which input would mean tracing forward.
    Else the example's own values are what is known to be valid: up to its largest (and at least 0 and 1)."""
    tables = [module.num_embeddings for module in model.modules() if isinstance(module, nn.Embedding)]
    return min(tables) if tables else max(int(example.max()) + 1 if example.numel() else 0, 2)


def export(cfg: DictConfig) -> dict[str, object]:
    """Export per `cfg`; returns {"path", "format", "max_abs_diff"} (also written to <run dir>/export.json)."""
    quiet_console()
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format!r} is not valid. Choose one of: {', '.join(FORMATS)}")
    overwrite = cfg.get("overwrite", False)
    path = check_output(
        cfg.output or Path(cfg.paths.output_dir) / f"model{SUFFIXES[cfg.format]}",
        overwrite,
        cfg.ckpt_path,
        example=f"model{SUFFIXES[cfg.format]}",
    )
    info("Loading %s", cfg.ckpt_path)
    model, task = load_trained(cfg.ckpt_path, allowed(cfg))
    model = model.eval().cpu()
    info("Model: %s", task.module)
    sample = example_batch(model, cfg.get("input_shape"))
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)  # export.json goes there, whatever `output` says

    generator = torch.Generator().manual_seed(0)
    example = random_batch(model, sample, 2, generator)  # 2, not 1: torch.export specializes a batch of one
    info("Exporting to %s (%s, inputs %s)", path, cfg.format, describe(model, example))
    write_atomically(path, lambda temporary: EXPORTERS[cfg.format](model, example, temporary), overwrite)
    training_started()  # the file is this run's work: a mismatch below keeps it (and export.json) to look at

    result = {"path": str(path), "format": cfg.format, "ckpt_path": str(cfg.ckpt_path), "max_abs_diff": None}
    if cfg.format == "onnx" and not _importable("onnxruntime"):
        log.warning("onnxruntime is not installed: %s was written but not checked (pip install -e '.[onnx]').", path)
    else:
        check = random_batch(model, sample, 5, generator)  # another batch size: the batch dimension is dynamic
        with torch.inference_mode():
            expected = call(model, check)
        result["max_abs_diff"] = float((run_exported(path, cfg.format, check) - expected).abs().max())
    (Path(cfg.paths.output_dir) / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    diff = result["max_abs_diff"]
    if diff is not None and not (np.isfinite(diff) and diff <= cfg.tolerance):
        raise ExportMismatch(
            f"tolerance={cfg.tolerance}: {path} differs from the checkpoint by up to {diff:.3g} on a random batch of "
            f"every input ({', '.join(input_names(model, example))}). Look for branches on input values in forward, "
            "or raise tolerance=."
        )
    if diff is not None:
        info("Exported %s; its outputs match the checkpoint's (max |diff| %.2g)", path, diff)
    return result
