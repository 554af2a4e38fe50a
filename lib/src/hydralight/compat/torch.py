"""torch's private surface the library relies on (tested against torch 2.13 and 2.14; `tests/test_compat.py`)."""

from typing import Any

import torch

__all__ = ["ONNX_REGISTRATION_LOGGER", "compile_in_place", "compiled_in_place", "composable_checkpoint", "foreach_norm"]

# The logger of the ONNX exporter's operator registry, whose per-operator warnings export.py quiets.
ONNX_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


def foreach_norm(tensors: list[torch.Tensor], norm_type: float) -> list[torch.Tensor]:
    """Each tensor's norm in one fused call (what torch.nn.utils.clip_grad_norm_ uses)."""
    return torch._foreach_norm(tensors, norm_type)


def compile_in_place(module: torch.nn.Module) -> None:
    """`module.compile()`, parameter names kept (no `_orig_mod.` prefix), around two bugs of torch 2.13's dynamo:
    - `nn.Module.compile` compiles `_call_impl`, which dynamo skips, and then a forward of torch's own (nn.Sequential,
      nn.Linear) as well, as torch's files: nothing is compiled (torch #150915). Called through a function of ours,
      as `torch.compile(module)` does (`wrap_inline`), dynamo traces both.
    - A first call under a dispatch mode (Lightning's model summary counts FLOPs under FlopCounterMode) makes dynamo
      skip that code for good, so the module never compiles (torch #190286): under a mode it runs eagerly.
    Copies and pickles of the module drop it, as they drop `nn.Module.compile`'s."""
    from torch.utils._python_dispatch import any_torch_dispatch_mode_on_stack

    call = module._call_impl

    def call_module(*args: Any, **kwargs: Any) -> Any:
        return call(*args, **kwargs)

    compiled = torch.compile(call_module)

    def compiled_unless_in_a_mode(*args: Any, **kwargs: Any) -> Any:
        return call(*args, **kwargs) if any_torch_dispatch_mode_on_stack() else compiled(*args, **kwargs)

    module._compiled_call_impl = compiled_unless_in_a_mode


def compiled_in_place(module: torch.nn.Module) -> bool:
    """Whether the module was compiled in place (`nn.Module.compile`, `compile_in_place`): `_compiled_call_impl`."""
    return getattr(module, "_compiled_call_impl", None) is not None


def composable_checkpoint(module: torch.nn.Module) -> Any:
    """Activation checkpointing applied to `module` in place, composable with fully_shard (FSDP2)."""
    from torch.distributed._composable import checkpoint

    return checkpoint(module)
