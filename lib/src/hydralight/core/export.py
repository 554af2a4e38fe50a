"""The export task: a checkpoint as a file that serves without this project, checked against the checkpoint.

  torchscript       .pt   torch.jit.load(path)(x); also loads in C++ (libtorch). torch >= 2.9 deprecates
                          torch.jit: exported_program is its successor.
  exported_program  .pt2  torch.export.load(path).module()(x)
  onnx              .onnx onnxruntime.InferenceSession(path).run(None, {"input": x}); needs pip install -e ".[onnx]"

The batch dimension stays dynamic in every format. Before returning, the exported file is loaded back and its outputs
are compared with the checkpoint's on a random batch; a difference above `tolerance` is an error.
"""

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningModule
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import Metric

from hydralight.compat.torch import ONNX_REGISTRATION_LOGGER
from hydralight.core.console import info, quiet_console
from hydralight.core.errors import UserError
from hydralight.core.runs.outputs import check_output, write_atomically
from hydralight.core.runs.trained import load_trained
from hydralight.core.trust import allowed

log = logging.getLogger(__name__)
SUFFIXES = {"torchscript": ".pt", "exported_program": ".pt2", "onnx": ".onnx"}
FORMATS = tuple(SUFFIXES)
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def _only_metrics(module: nn.Module) -> bool:
    children = list(module.children())
    return isinstance(module, Metric) or (bool(children) and all(_only_metrics(child) for child in children))


class PlainForward(nn.Module):
    """The LightningModule's `forward` on its own modules and tensors, without the LightningModule around them.

    torch.jit.trace probes every attribute of a module, and a LightningModule's Trainer-only properties raise outside
    a Trainer (Lightning's own `to_torchscript` is deprecated and goes in Lightning 2.8).
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
        self._forward = type(model).forward

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(self, x)


def export_torchscript(model: LightningModule, example: Tensor, path: Path) -> None:
    info("torch.jit is deprecated upstream (torch and Lightning); format=exported_program is its successor.")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=DeprecationWarning)
        torch.jit.save(torch.jit.trace(PlainForward(model).eval(), example), str(path))


def export_program(model: LightningModule, example: Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), str(path))


def export_onnx(model: LightningModule, example: Tensor, path: Path) -> None:
    missing = [name for name in ("onnx", "onnxscript") if not _importable(name)]
    if missing:
        raise UserError(f"format=onnx needs {' and '.join(missing)}: pip install -e '.[onnx]'")
    # torch.onnx warns once per torchvision operator it cannot register (torchvision is no part of this project), and
    # its graph passes log at INFO: the run's log keeps our own lines.
    noisy = [logging.getLogger(name) for name in (ONNX_REGISTRATION_LOGGER, "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in noisy]
    for logger in noisy:
        logger.setLevel(logging.ERROR)
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
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


def run_exported(path: Path, fmt: str, x: Tensor) -> Tensor:
    """The exported file's outputs for `x`, loaded back the way a user would load it."""
    if fmt == "torchscript":
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")(x)
    if fmt == "exported_program":
        with torch.inference_mode():
            return torch.export.load(str(path)).module()(x)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])


EXPORTERS = {"torchscript": export_torchscript, "exported_program": export_program, "onnx": export_onnx}


def sample_input(model: LightningModule, input_shape: object = None) -> tuple[tuple[int, ...], torch.dtype]:
    """One sample's shape and dtype: `input_shape=` if given, else the module's own `example_input_array` without its
    batch; the dtype is the example's (token ids are integers), float32 without one."""
    example = model.example_input_array
    dtype = example.dtype if isinstance(example, Tensor) else torch.float32
    if input_shape:
        return tuple(int(size) for size in input_shape), dtype
    if isinstance(example, Tensor) and example.ndim >= 1:
        return tuple(example.shape[1:]), dtype
    if example is None:
        raise UserError(
            f"input_shape: {type(model).__name__} has no example_input_array, so one sample's shape is unknown. "
            "Give it, e.g. input_shape=[1,8,8], or set self.example_input_array in the module."
        )
    raise UserError(
        f"input_shape: {type(model).__name__}'s example_input_array is a {type(example).__name__}; export takes "
        "one tensor input. Give one sample's shape, e.g. input_shape=[1,8,8]."
    )


def random_batch(
    model: LightningModule, size: int, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator
) -> Tensor:
    """`size` random samples the module accepts: floats in [0, 1), or integer ids (tokens) that every embedding
    table of the module can look up, since an id past the smallest table would be an index error, not a check."""
    if dtype.is_floating_point:
        return torch.rand(size, *shape, generator=generator, dtype=dtype)
    tables = [module.num_embeddings for module in model.modules() if isinstance(module, nn.Embedding)]
    return torch.randint(min(tables, default=2), (size, *shape), generator=generator, dtype=dtype)


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
    shape, dtype = sample_input(model, cfg.get("input_shape"))
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)  # export.json goes there, whatever `output` says

    generator = torch.Generator().manual_seed(0)
    example = random_batch(model, 2, shape, dtype, generator)  # 2, not 1: torch.export specializes a batch of one
    info("Exporting to %s (%s, input (batch, %s))", path, cfg.format, ", ".join(map(str, shape)))
    write_atomically(path, lambda temporary: EXPORTERS[cfg.format](model, example, temporary), overwrite)

    result = {"path": str(path), "format": cfg.format, "ckpt_path": str(cfg.ckpt_path), "max_abs_diff": None}
    if cfg.format == "onnx" and not _importable("onnxruntime"):
        log.warning("onnxruntime is not installed: %s was written but not checked (pip install -e '.[onnx]').", path)
    else:
        check = random_batch(model, 5, shape, dtype, generator)  # another batch size: the batch dimension is dynamic
        with torch.inference_mode():
            expected = model(check)
        result["max_abs_diff"] = float((run_exported(path, cfg.format, check) - expected).abs().max())
    (Path(cfg.paths.output_dir) / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    diff = result["max_abs_diff"]
    if diff is not None and not (np.isfinite(diff) and diff <= cfg.tolerance):
        raise RuntimeError(
            f"The exported model differs from the checkpoint by up to {diff:.3g} (tolerance {cfg.tolerance})."
        )
    if diff is not None:
        info("Exported %s; its outputs match the checkpoint's (max |diff| %.2g)", path, diff)
    return result
