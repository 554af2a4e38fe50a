"""`strategy=dp`: torch.nn.DataParallel, which Lightning 2.0 removed (Lightning #16748).

One process drives every device in `trainer.devices`. Only the network (`module_name`, default `net`) is wrapped,
so the LightningModule itself, its `self.log` calls, metrics and loss stay on the root device, exactly as on one
device. Each forward scatters the batch across the devices and gathers the outputs back on the root device.
"""

import logging
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.strategies import ParallelStrategy
from torch import Tensor, nn

from hydralight.errors import UserError

log = logging.getLogger(__name__)


class DataParallelStrategy(ParallelStrategy):
    """Single-process multi-GPU data parallelism; checkpoints carry no `module.` prefix."""

    strategy_name = "dp"

    def __init__(self, module_name: str = "net", **kwargs: Any) -> None:
        self.devices_asked = 0
        super().__init__(cluster_environment=None, **kwargs)
        self.module_name = module_name
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

    def _module(self) -> LightningModule:
        module = self.lightning_module
        if not isinstance(getattr(module, self.module_name, None), nn.Module):
            children = ", ".join(name for name, _ in module.named_children())
            raise UserError(
                f"strategy.module_name={self.module_name!r}: `{type(module).__name__}.{self.module_name}` is not an "
                f"nn.Module, so strategy=dp cannot wrap it. Choose one of: {children}"
            )
        return module

    def setup(self, trainer: Trainer) -> None:
        super().setup(trainer)  # moves the model to the root device, builds optimizers
        module = self._module()
        device_ids = [device.index for device in self.parallel_devices if device.type == "cuda"]
        if not device_ids and not self._said_no_cuda:
            asked = f", not the {self.devices_asked} of trainer.devices" if self.devices_asked > 1 else ""
            log.warning(
                "strategy=dp: no CUDA device, so DataParallel runs on one device (%s) in this process%s.",
                self.root_device,
                asked,
            )
            self._said_no_cuda = True
        net = getattr(module, self.module_name)
        setattr(module, self.module_name, nn.DataParallel(net, device_ids=device_ids or None))

    def teardown(self) -> None:
        # Unwrap, so that between stages (fit, then test) checkpoints load into the plain network.
        module = self.lightning_module
        if module is not None and isinstance(getattr(module, self.module_name, None), nn.DataParallel):
            setattr(module, self.module_name, getattr(module, self.module_name).module)
        super().teardown()

    def lightning_module_state_dict(self) -> dict[str, Any]:
        wrapped, plain = f"{self.module_name}.module.", f"{self.module_name}."
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
