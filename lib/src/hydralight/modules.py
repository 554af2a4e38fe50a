"""What the shipped LightningModules share: plain-container configs (so checkpoints load with `weights_only=True`),
a cheap weighted mean, metric objects logged once per epoch, optimizer + scheduler built from their configs, and a
net's tensor-parallel plan applied."""

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torchmetrics import Metric

STAGES = ("train", "val", "test")


def apply_tensor_parallel(module: LightningModule, net: torch.nn.Module) -> None:
    """`configure_model`'s work under strategy=model_parallel: split `net` over the tensor-parallel dimension of the
    module's device mesh by the plan its `tensor_parallel_plan()` gives (torch's `parallelize_module`). Nothing under
    any other strategy, for a net without a plan (the strategy then says what is missing), or once applied."""
    mesh = module.device_mesh
    plan = getattr(net, "tensor_parallel_plan", None)
    if mesh is None or mesh["tensor_parallel"].size() == 1 or plan is None:
        return
    from torch.distributed.tensor.parallel import parallelize_module

    from hydralight.core.strategies.sharded import is_sharded  # the strategy that made the mesh imported it

    if not is_sharded(net):
        parallelize_module(net, mesh["tensor_parallel"], plan())


def plain(config: Mapping | None) -> dict | None:
    """A resolved, plain-dict copy: what `save_hyperparameters` may store without breaking weights-only loading."""
    if config is None:
        return None
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)


def build(config: Mapping, *args: Any) -> Any:
    """Hydra instantiate with plain containers throughout (a ListConfig in an optimizer's betas ends up in its
    state dict, and from there in every checkpoint)."""
    return instantiate(config, *args, _convert_="all")


class WeightedMean(Metric):
    """The mean of a stream of values weighted by batch size, summed over DDP ranks when computed.

    torchmetrics' MeanMetric tests every update for NaN, and each test waits for the GPU: two host syncs per step.
    Here a NaN simply shows in the mean (and GradientGuard stops the run at the first one).
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: float) -> None:
        self.total += value.to(self.total.dtype) * weight
        self.weight += weight

    def compute(self) -> Tensor:
        return self.total / self.weight


def with_scheduler(module: LightningModule, optimizer: torch.optim.Optimizer) -> Any:
    """What `configure_optimizers` returns: `optimizer` alone, or with the scheduler of `module.hparams.scheduler`
    (Lightning's lr_scheduler dict: interval, monitor, ...), given the run's total steps where it takes them."""
    if not module.hparams.scheduler:
        return optimizer
    lr_scheduler = dict(module.hparams.scheduler)
    factory = build(lr_scheduler.pop("scheduler"))
    kwargs = {}
    if "total_steps" in inspect.signature(factory.func).parameters and "total_steps" not in factory.keywords:
        kwargs["total_steps"] = int(module.trainer.estimated_stepping_batches)  # OneCycleLR, WarmupCosineLR
    lr_scheduler["scheduler"] = factory(optimizer, **kwargs)
    return {"optimizer": optimizer, "lr_scheduler": lr_scheduler}


class EpochMetrics:
    """LightningModule mixin: `self._logged_stages` (a set the module makes) holds the stages whose metric objects
    were logged this epoch, so that each is logged once, from the epoch's first step (each `self.log` costs Lightning
    bookkeeping; an epoch-end hook would run after the callbacks read them); step values are logged only on the
    steps Lightning sends to the loggers."""

    _logged_stages: set[str]

    def _loggers_write_this_step(self) -> bool:
        """Lightning sends step values to the loggers every `trainer.log_every_n_steps` optimizer steps (its own
        `should_update_logs`); a step value logged in between is overwritten unseen, and each `self.log` costs."""
        trainer = self._trainer
        if trainer is None or trainer.fast_dev_run or trainer.should_stop:
            return True
        every = trainer.log_every_n_steps
        return every > 0 and (self.global_step + 1) % every == 0

    def on_train_epoch_start(self) -> None:
        self._logged_stages.discard("train")

    def on_validation_epoch_start(self) -> None:
        self._logged_stages.discard("val")

    def on_test_epoch_start(self) -> None:
        self._logged_stages.discard("test")
