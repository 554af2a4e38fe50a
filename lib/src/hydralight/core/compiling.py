"""`compile=true` (train.yaml), imported only by the runs that ask for it: the module's networks compiled in place."""

import logging

import torch
from torchmetrics import Metric

from hydralight.compat.torch import compile_in_place, compiled_in_place

log = logging.getLogger(__name__)


def compile_networks(model: torch.nn.Module) -> list[str]:
    """`compile=true`: torch.compile, in place, each direct sub-module of `model` that has parameters and a forward
    (metrics and containers such as ModuleDict have none), so its parameter names stay those of an uncompiled run:
    checkpoints load with or without compile, in eval, predict and export. Returns the names compiled."""
    compiled = []
    for name, child in model.named_children():
        if isinstance(child, Metric) or type(child).forward is torch.nn.Module.forward:
            continue
        if any(True for _ in child.parameters()):
            compile_in_place(child)  # no `_orig_mod.` wrapper, unlike torch.compile(child)
            compiled.append(name)
    if not compiled:
        log.warning(
            "compile=true: %s has no sub-module with parameters and a forward to compile; it runs uncompiled.",
            type(model).__name__,
        )
    return compiled


def compiled_state(model: torch.nn.Module) -> str:
    """Whether torch.compile really wraps any part of the model (compile=true compiles its networks), and which."""
    compiled = [
        name or "the whole model"
        for name, module in model.named_modules()
        if compiled_in_place(module)  # nn.Module.compile()
        or hasattr(module, "_orig_mod")  # what torch.compile(module) returns
    ]
    return f"compiled ({', '.join(compiled)})" if compiled else "not compiled"
