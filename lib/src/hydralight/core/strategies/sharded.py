"""`strategy=model_parallel` and `strategy=fsdp`: tensor parallelism and FSDP2 sharding, on CPUs (gloo) and GPUs.

Lightning's `ModelParallelStrategy` lays the processes out on a 2-D mesh (data parallel x tensor parallel) and leaves
all the splitting to the module's `configure_model`. This subclass splits the work in two, so that any module runs
sharded and a module brings only what is its own:
- tensor parallelism is the module's: its `configure_model` applies its plan over `self.device_mesh["tensor_parallel"]`
  (the shipped modules do, through `models.common.apply_tensor_parallel`); a module without one gets a clear error
  when `tensor_parallel_size` > 1;
- data-parallel sharding is the strategy's: FSDP2's `fully_shard` on each block (`shard_modules`, by default the
  elements of every `nn.ModuleList`), then on each sub-module of the LightningModule, over the data-parallel
  dimension, with `cpu_offload` and `activation_checkpointing` as switches.
Checkpoints are consolidated on save (one file, the weights and optimizer state gathered on rank 0), so resume,
eval, predict, export and `torch.load(weights_only=True)` read them as any other checkpoint.
"""

from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.optim import Optimizer

from hydralight.compat.lightning import (
    materialize_distributed_module,
    optimizers_to_device,
    rekey_optimizer_state_if_needed,
    replace_clip_grad_by_norm,
)
from hydralight.compat.torch import composable_checkpoint
from hydralight.core.console import info
from hydralight.core.errors import UserError
from hydralight.core.gradients import clip_by_norm

Size = int | Literal["auto"]


def mesh_sizes(data_parallel: Size, tensor_parallel: Size, world_size: int, num_nodes: int) -> tuple[int, int]:
    """(data parallel, tensor parallel) for `world_size` processes. Both `auto`: Lightning's choice (tensor parallel
    within a node, data parallel across nodes); one given: the other fills the world."""
    if data_parallel == "auto" and tensor_parallel == "auto":
        data_parallel, tensor_parallel = num_nodes, world_size // num_nodes
    elif data_parallel == "auto":
        data_parallel = world_size // tensor_parallel if tensor_parallel > 0 else 0
    elif tensor_parallel == "auto":
        tensor_parallel = world_size // data_parallel if data_parallel > 0 else 0
    if data_parallel < 1 or tensor_parallel < 1 or data_parallel * tensor_parallel != world_size:
        raise UserError(
            f"strategy.data_parallel_size={data_parallel} x strategy.tensor_parallel_size={tensor_parallel} must be "
            f"the number of processes, trainer.num_nodes x trainer.devices = {world_size}: "
            "set one of them (or both to auto) so that the product matches."
        )
    return data_parallel, tensor_parallel


def is_sharded(module: nn.Module) -> bool:
    """Whether any parameter of `module` is a DTensor (split over a device mesh)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(parameter, DTensor) for parameter in module.parameters())


def load_optimizer_state(module: nn.Module, optimizer: Optimizer, state: dict[str, Any]) -> None:
    """A consolidated optimizer state (as saved on rank 0) into a sharded module's optimizer, each process taking its
    shard. A stateless one (no per-parameter state) has only its hyperparameters to restore."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not state["state"]:
        optimizer.load_state_dict(state)
        return
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    state = rekey_optimizer_state_if_needed(state, module)
    set_optimizer_state_dict(module, optimizer, optim_state_dict=state, options=options)


def require_plan(module: LightningModule, tensor_parallel_size: int) -> None:
    """Tensor parallelism is the module's to apply (in its configure_model): say what to write where it did not."""
    if tensor_parallel_size > 1 and not is_sharded(module):
        raise UserError(
            f"strategy.tensor_parallel_size={tensor_parallel_size}: {type(module).__name__} applies no "
            "tensor-parallel plan. Implement its configure_model() to split its layers over "
            "self.device_mesh['tensor_parallel'] (torch's parallelize_module; see "
            "hydralight.modules.apply_tensor_parallel and README 'Model parallelism'), "
            "or shard it with strategy=fsdp instead."
        )


class ShardedStrategy(ModelParallelStrategy):
    """FSDP2 over the data-parallel dimension and the module's tensor-parallel plan over the other."""

    def __init__(
        self,
        data_parallel_size: Size = "auto",
        tensor_parallel_size: Size = "auto",
        shard_modules: list[str] | None = None,
        cpu_offload: bool = False,
        activation_checkpointing: bool = False,
        reshard_after_forward: bool = True,
        process_group_backend: str | None = None,
    ) -> None:
        super().__init__(
            data_parallel_size=data_parallel_size,
            tensor_parallel_size=tensor_parallel_size,
            save_distributed_checkpoint=False,
            process_group_backend=process_group_backend,
        )
        self.sizes = (data_parallel_size, tensor_parallel_size)  # as configured; resolved per world in setup
        self.shard_modules = list(shard_modules) if shard_modules is not None else None
        self.cpu_offload = cpu_offload
        self.activation_checkpointing = activation_checkpointing
        self.reshard_after_forward = reshard_after_forward

    def mesh_sizes(self, world_size: int, num_nodes: int) -> tuple[int, int]:
        """(data parallel, tensor parallel) of the configured sizes for `world_size` processes (see `mesh_sizes`)."""
        return mesh_sizes(*self.sizes, world_size, num_nodes)

    def check_settings(self, devices: object, num_nodes: int) -> None:
        """The settings this strategy refuses for the run's `trainer.devices` and `trainer.num_nodes`, told by the
        Trainer's builder in one process, not in every process it would start."""
        if isinstance(devices, int) and devices > 0:
            self.mesh_sizes(num_nodes * devices, num_nodes)
        if self.cpu_offload and not torch.cuda.is_available():
            raise UserError(
                "strategy.cpu_offload=true keeps a GPU run's parameters, gradients and optimizer state in CPU memory; "
                "this run is on the CPU, where they are already. Drop it (or set strategy.cpu_offload=false)."
            )

    def setup_environment(self) -> None:
        world_size = self.num_nodes * self.num_processes
        self._data_parallel_size, self._tensor_parallel_size = self.mesh_sizes(world_size, self.num_nodes)
        super().setup_environment()

    def setup(self, trainer: Trainer) -> None:
        """Lightning's setup, with the sharding between the module's `configure_model` and the optimizers (which must
        see the sharded parameters). Lightning's own requires `configure_model`; here only tensor parallelism does."""
        assert self.model is not None and self.accelerator is not None
        self.accelerator.setup(trainer)
        module = self.lightning_module
        require_plan(module, self.device_mesh["tensor_parallel"].size())
        self.shard(module)
        materialize_distributed_module(self.model, self.root_device)
        self.model = self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        self.barrier()
        if trainer.state.fn == TrainerFn.FITTING:
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()
        # Clipping by norm over both meshes (hydralight.core.gradients): torch's own stacks norms of mixed meshes.
        replace_clip_grad_by_norm(
            self.precision_plugin,
            lambda optimizer, clip_val: clip_by_norm(self.precision_plugin.main_params(optimizer), clip_val),
        )
        if trainer.state.fn == TrainerFn.FITTING:
            optimizers_to_device(self.optimizers, self.root_device)

    def load_checkpoint(self, checkpoint_path: str | Path, weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's, but with the optimizer states loaded here, and only when fitting: its own loader fails on the
        empty state of a stateless optimizer (SGD without momentum: an IndexError) and loads them for a test too."""
        optimizers, self.optimizers = self.optimizers, []
        try:
            checkpoint = super().load_checkpoint(checkpoint_path, weights_only)
        finally:
            self.optimizers = optimizers
        if self.lightning_module.trainer.state.fn == TrainerFn.FITTING:
            for optimizer, state in zip(optimizers, checkpoint.get("optimizer_states", []), strict=True):
                load_optimizer_state(self.model, optimizer, state)
        return checkpoint

    def shard(self, module: LightningModule) -> None:
        """fully_shard each block, then each sub-module with parameters, over the data-parallel dimension. Once only:
        a second `trainer.test` after `fit` finds the module sharded already."""
        from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, OffloadPolicy, fully_shard

        if any(isinstance(sub, FSDPModule) for sub in module.modules()):
            return
        loose = [name for name, _ in module.named_parameters(recurse=False)]
        if loose:
            raise UserError(
                f"{type(module).__name__} holds parameters of its own ({', '.join(loose)}): FSDP shards sub-modules. "
                "Move them into an nn.Module attribute."
            )
        mesh = self.device_mesh["data_parallel"]
        options = {
            "mesh": mesh,
            "reshard_after_forward": self.reshard_after_forward,
            "offload_policy": CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy(),
        }
        blocks = self.blocks(module)
        if self.activation_checkpointing and not blocks:
            raise UserError(
                f"strategy.activation_checkpointing=true: {type(module).__name__} has no blocks to recompute (no "
                "nn.ModuleList). Name their classes in strategy.shard_modules."
            )
        for block in blocks:
            if self.activation_checkpointing:
                composable_checkpoint(block)  # parameter names stay as they are, so checkpoints keep their keys
            fully_shard(block, **options)
        roots = [child for child in module.children() if any(True for _ in child.parameters())]
        for root in roots:
            fully_shard(root, **options)
        info(
            "Sharded over %d data-parallel process(es): %d block(s), %d root module(s)%s%s",
            mesh.size(),
            len(blocks),
            len(roots),
            ", activation checkpointing" if self.activation_checkpointing else "",
            ", CPU offload" if self.cpu_offload else "",
        )

    def blocks(self, module: LightningModule) -> list[nn.Module]:
        """The modules sharded (and gathered) one at a time: those of a class in `shard_modules`, by default the
        elements of every nn.ModuleList (a transformer's blocks)."""
        if self.shard_modules is None:
            return [block for list_ in module.modules() if isinstance(list_, nn.ModuleList) for block in list_]
        found = [sub for sub in module.modules() if type(sub).__name__ in self.shard_modules]
        missing = set(self.shard_modules) - {type(sub).__name__ for sub in found}
        if missing:
            classes = sorted({type(sub).__name__ for sub in module.modules()})
            raise UserError(
                f"strategy.shard_modules: {type(module).__name__} has no module of class {', '.join(sorted(missing))}. "
                f"Its classes: {', '.join(classes)}"
            )
        return found
