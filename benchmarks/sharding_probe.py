"""The probe benchmarks/sharding.py adds to each training run (`+callbacks.state_memory._target_=...`): what one
process holds of the training state, the activations its first forward keeps, its peak RSS. A module of its own, so
that the benchmark's parent process never imports torch or Lightning."""

import json
import resource
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback
from torch.distributed.tensor import DTensor


def local_bytes(tensor: Any) -> int:
    """Bytes this process holds of `tensor`: its shard for a DTensor."""
    if isinstance(tensor, DTensor):
        tensor = tensor.to_local()
    return tensor.numel() * tensor.element_size() if isinstance(tensor, torch.Tensor) else 0


class StateMemory(Callback):
    """Writes `<folder>/rank<R>.json`: this process's parameter, gradient and optimizer-state bytes (after the first
    optimizer step, when all three exist) and its peak RSS at the end of training."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.figures: dict[str, float] = {}
        self._saving: Any = None  # the saved-tensor hooks while the first batch's forward runs
        self._saved: dict[int, int] = {}

    def on_train_batch_start(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        """The first forward's activations kept for the backward (what activation checkpointing saves): the bytes of
        the tensors autograd saves, each storage once."""
        if "activations" in self.figures or self._saving is not None:
            return

        def pack(tensor: Any) -> Any:
            local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
            if local.device.type != "meta":
                self._saved[local.untyped_storage().data_ptr()] = local.untyped_storage().nbytes()
            return tensor

        self._saving = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
        self._saving.__enter__()

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        if self._saving is not None and "activations" not in self.figures:
            self._saving.__exit__(None, None, None)
            self.figures["activations"] = sum(self._saved.values())

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if "grads" not in self.figures:
            self.figures["grads"] = sum(local_bytes(p.grad) for p in pl_module.parameters() if p.grad is not None)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        if "optimizer" not in self.figures and trainer.global_step > 0:
            state = [value for optimizer in trainer.optimizers for per_param in optimizer.state.values()
                     for value in per_param.values()]  # fmt: skip
            self.figures["optimizer"] = sum(local_bytes(value) for value in state)
            self.figures["params"] = sum(local_bytes(p) for p in pl_module.parameters())
            self.figures["all_params"] = sum(p.numel() * p.element_size() for p in pl_module.parameters())

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.figures["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.figures))
