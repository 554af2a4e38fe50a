"""The digits classifier (`model=classifier data=digits`, the default task) runs the LightningModule contract, built
from the real configs, shrunk."""

from functools import cache
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from omegaconf import DictConfig

from hydralight.testing.contract import LightningModuleContract
from tests.conftest import ROOT, compose_config

# Small nets without dropout (its masks would make no two runs comparable); batch size 16 splits into 4 x 4.
SHRUNK = ("model.net.dropout=0", "data.batch_size=16")


@cache
def config(*overrides: str) -> DictConfig:
    """The composed train config; only its model and data parts are used (nothing is written to the output dir)."""
    return compose_config("train", ROOT / "outputs" / "contract", (*SHRUNK, *overrides))


def first_val_batch(cfg: DictConfig) -> Any:
    """The first batch of the data module's validation loader: real samples in a fixed order."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return next(iter(datamodule.val_dataloader()))


class TestClassifierMLP(LightningModuleContract):
    """The default net (model/net=mlp), without batch-norm: its batch statistics couple a batch's samples, so 4
    micro-batches could not equal one batch of 4x."""

    overrides = ("model.net.batch_norm=false",)

    def make_module(self) -> LightningModule:
        return instantiate(config(*self.overrides).model)

    def make_batch(self) -> Any:
        return first_val_batch(config(*self.overrides))


class TestClassifierCNN(TestClassifierMLP):
    """model/net=cnn: its batch-norm layers (whose running statistics the checkpoint must carry) make accumulation
    and DDP inexact by design, so those two properties are switched off."""

    overrides = ("model/net=cnn", "model.net.channels=[8,16]")
    overfit_steps = 200  # this small a CNN learns one batch more slowly than the MLP
    test_accumulating_4_micro_batches_equals_one_batch_of_4x = None
    test_ddp_on_2_cpu_processes_equals_one_process_of_the_doubled_batch = None


def test_the_plateau_schedule_follows_monitor_and_mode():
    """`monitor=`/`mode=` reach the classifier's plateau scheduler as they reach the library's callbacks."""
    cfg = config("monitor=val/loss", "mode=min", "model/scheduler=plateau")
    assert (cfg.model.scheduler.monitor, cfg.model.scheduler.scheduler.mode) == ("val/loss", "min")


def test_the_cnns_activation_checkpointing_gives_the_same_gradients():
    """model.net.activation_checkpointing=true recomputes activations in backward: same loss, same gradients."""
    from my_project.models.cnn import ResNetCNN

    torch.manual_seed(0)
    plain = ResNetCNN((1, 8, 8), 10, channels=(8, 16), dropout=0.0)
    checkpointed = ResNetCNN((1, 8, 8), 10, channels=(8, 16), dropout=0.0, activation_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(16, 1, 8, 8)
    for net in (plain, checkpointed):
        net(x).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
