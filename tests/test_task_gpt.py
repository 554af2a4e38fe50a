"""The character GPT (`experiment=shakespeare_gpt`: model=gpt data=shakespeare) runs the LightningModule contract,
built from the real configs, shrunk."""

from functools import cache
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from omegaconf import DictConfig

from hydralight.testing.contract import LightningModuleContract
from tests.conftest import ROOT, compose_config

SHRUNK = (
    "experiment=shakespeare_gpt",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.dropout=0",  # its masks would make no two runs comparable
    "data.block_size=16",
    "data.batch_size=8",  # splits into 4 x 2
    "model.scheduler.scheduler.warmup_steps=10",  # the shipped 100 would leave a 200-step overfit run in warm-up
)


@cache
def config() -> DictConfig:
    """The composed train config; only its model and data parts are used (nothing is written to the output dir)."""
    return compose_config("train", ROOT / "outputs" / "contract", SHRUNK)


@cache
def first_val_batch() -> Any:
    """The first validation windows of Tiny Shakespeare (inputs, next characters), read once."""
    datamodule = instantiate(config().data)
    datamodule.setup("fit")
    return next(iter(datamodule.val_dataloader()))


class TestGPT(LightningModuleContract):
    def make_module(self) -> LightningModule:
        return instantiate(config().model)

    def make_batch(self) -> Any:
        return first_val_batch()
