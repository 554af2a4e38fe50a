"""torch's private surface the library relies on (tested against torch 2.13 and 2.14; `tests/test_compat.py`)."""

from typing import Any

import torch

__all__ = ["ONNX_REGISTRATION_LOGGER", "composable_checkpoint", "foreach_norm"]

# The logger of the ONNX exporter's operator registry, whose per-operator warnings export.py quiets.
ONNX_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


def foreach_norm(tensors: list[torch.Tensor], norm_type: float) -> list[torch.Tensor]:
    """Each tensor's norm in one fused call (what torch.nn.utils.clip_grad_norm_ uses)."""
    return torch._foreach_norm(tensors, norm_type)


def composable_checkpoint(module: torch.nn.Module) -> Any:
    """Activation checkpointing applied to `module` in place, composable with fully_shard (FSDP2)."""
    from torch.distributed._composable import checkpoint

    return checkpoint(module)
