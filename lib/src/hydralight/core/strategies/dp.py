"""`strategy=dp`: torch.nn.DataParallel, which Lightning 2.0 removed (Lightning #16748).

One process drives every device in `trainer.devices`. Only the network is wrapped (`module_name`; by default the
module's `net`, else its one sub-module with parameters, so any LightningModule whose forward runs one network
needs no setting), so the LightningModule itself, its `self.log` calls, metrics and loss stay on the root device,
exactly as on one device. Each forward scatters the batch across the devices and gathers the outputs back on the
root device.
"""

import logging
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.strategies import ParallelStrategy
from torch import Tensor, nn

from hydralight.compat.torch import compiled_in_place
from hydralight.core.errors import UserError

log = logging.getLogger(__name__)


def _only(networks: list[str], module: LightningModule) -> str:
    """The one sub-module with parameters: the network to wrap when the module names none."""
    if len(networks) == 1:
        return networks[0]
    if not networks:
        raise UserError(
            f"strategy=dp: {type(module).__name__} has no sub-module with parameters, so there is no network to wrap."
        )
    raise UserError(
        f"strategy.module_name=null: {type(module).__name__} has no `net` and several sub-modules with parameters, "
        f"so strategy=dp cannot tell which network its forward runs. Choose one of: {', '.join(networks)}"
    )


def refuse_compiled_replicas(net: nn.Module, device_ids: list[int]) -> None:
    """DataParallel copies the network to each GPU at every step, and each copy of a network compiled in place
    (compile=true) keeps calling the original's compiled forward, on the first GPU's weights: refuse it."""
    if len(device_ids) > 1 and compiled_in_place(net):
        raise UserError(
            f"compile=true with strategy=dp over {len(device_ids)} GPUs: DataParallel's per-step copies of a compiled "
            "network would all run the original on the first GPU. Use strategy=ddp with compile=true, or compile=false."
        )


class DataParallelStrategy(ParallelStrategy):
    """Single-process multi-GPU data parallelism; checkpoints carry no `module.` prefix."""

    strategy_name = "dp"

    def __init__(self, module_name: str | None = None, **kwargs: Any) -> None:
        self.devices_asked = 0
        super().__init__(cluster_environment=None, **kwargs)
        self.module_name = module_name  # as configured; None: found in setup
        self.wrapped: str | None = None  # the attribute wrapped in DataParallel, once set up
        self._said_no_cuda = False

    # One process, one rank: nothing to shard, sync or gather across processes.
    is_distributed = False

    @property
    def parallel_devices(self) -> list[torch.device] | None:
        return self._parallel_devices

    @parallel_devices.setter
    def parallel_devices(self, devices: list[torch.device] | None) -> None:
        # Without CUDA every device of `trainer.devices=N` is the same CPU: one to run on, in this one process.
        self.devices_asked = len(devices or ())
        self._parallel_devices = list(dict.fromkeys(devices)) if devices else devices

    @property
    def root_device(self) -> torch.device:
        return self.parallel_devices[0]

    def model_to_device(self) -> None:
        self.model.to(self.root_device)

    def _network_name(self, module: LightningModule) -> str:
        """`module_name` if given, else `net`, else the module's one sub-module with parameters (metrics have none)."""
        networks = [name for name, child in module.named_children() if any(True for _ in child.parameters())]
        name = self.module_name
        if name is None:
            name = "net" if isinstance(getattr(module, "net", None), nn.Module) else _only(networks, module)
        if not isinstance(getattr(module, name, None), nn.Module):
            children = ", ".join(networks or [child for child, _ in module.named_children()])
            raise UserError(
                f"strategy.module_name={name!r}: `{type(module).__name__}.{name}` is not an "
                f"nn.Module, so strategy=dp cannot wrap it. Choose one of: {children}"
            )
        return name

    def setup(self, trainer: Trainer) -> None:
        super().setup(trainer)  # moves the model to the root device, builds optimizers
        module = self.lightning_module
        self.wrapped = self._network_name(module)
        device_ids = [device.index for device in self.parallel_devices if device.type == "cuda"]
        if not device_ids and not self._said_no_cuda:
            asked = f", not the {self.devices_asked} of trainer.devices" if self.devices_asked > 1 else ""
            log.warning(
                "strategy=dp: no CUDA device, so DataParallel runs on one device (%s) in this process%s.",
                self.root_device,
                asked,
            )
            self._said_no_cuda = True
        net = getattr(module, self.wrapped)
        refuse_compiled_replicas(net, device_ids)
        setattr(module, self.wrapped, nn.DataParallel(net, device_ids=device_ids or None))

    def teardown(self) -> None:
        # Unwrap, so that between stages (fit, then test) checkpoints load into the plain network.
        module, name = self.lightning_module, self.wrapped
        if module is not None and name is not None and isinstance(getattr(module, name, None), nn.DataParallel):
            setattr(module, name, getattr(module, name).module)
        super().teardown()

    def lightning_module_state_dict(self) -> dict[str, Any]:
        if self.wrapped is None:
            return super().lightning_module_state_dict()
        wrapped, plain = f"{self.wrapped}.module.", f"{self.wrapped}."
        return {
            (plain + key[len(wrapped) :] if key.startswith(wrapped) else key): value
            for key, value in super().lightning_module_state_dict().items()
        }

    def reduce(self, tensor: Tensor | Any, *args: Any, **kwargs: Any) -> Tensor | Any:
        return tensor

    def barrier(self, *args: Any, **kwargs: Any) -> None:
        pass

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def all_gather(self, tensor: Tensor, group: Any | None = None, sync_grads: bool = False) -> Tensor:
        return tensor

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision
