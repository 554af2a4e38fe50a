"""The module contract (hydralight.testing.contract) on the task shapes users bring: a plain regression, a module
taking a dict of inputs whose batches are dicts, and a module stepping its own optimizers (a GAN's shape). Each
property checks the module or is skipped saying why, with nothing switched off in the subclass (issue 27)."""

import importlib.util
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule

from hydralight.testing.contract import LightningModuleContract
from hydralight.testing.manual import TwoStepRegression
from hydralight.testing.masked import MaskedMeanData, MaskedMeanRegression
from hydralight.testing.tasks import NetRegression


def first_batch(datamodule: Any) -> Any:
    return next(iter(datamodule.train_dataloader()))


def linear_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """16 samples of 4 features and a target linear in them: what a tiny net fits within the contract's steps."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=generator)
    return x, x @ torch.randn(4, generator=generator)


class TestPlainRegression(LightningModuleContract):
    def make_module(self) -> LightningModule:
        return NetRegression()

    def make_batch(self) -> Any:
        return linear_batch()


class TestDictBatches(LightningModuleContract):
    """`{values, mask, target}` batches, forward(values, mask): every property handles the dict."""

    def make_module(self) -> LightningModule:
        return MaskedMeanRegression()

    def make_batch(self) -> Any:
        return first_batch(MaskedMeanData(batch_size=16))


class TestManualOptimization(LightningModuleContract):
    """Two networks, two optimizers stepped by hand in training_step, which returns nothing."""

    def make_module(self) -> LightningModule:
        return TwoStepRegression()

    def make_batch(self) -> Any:
        return linear_batch()


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs the hf extra (transformers)")
class TestHuggingFaceModel(LightningModuleContract):
    """A random BERT as Hugging Face users write a module: dict batches with `labels`, its own warm-up schedule."""

    overfit_steps = 60

    def make_module(self) -> LightningModule:
        from hydralight.testing.hf import TinyTextClassifier

        return TinyTextClassifier()

    def make_batch(self) -> Any:
        from hydralight.testing.hf import MarkerData

        return first_batch(MarkerData(batch_size=16))


def test_a_property_that_cannot_apply_is_skipped_with_its_reason():
    """Accumulation under manual optimization is the module's own business: the property says so, it does not fail."""
    contract = TestManualOptimization()
    with pytest.raises(pytest.skip.Exception, match=r"TwoStepRegression steps its own optimizers"):
        contract.test_accumulating_4_micro_batches_equals_one_batch_of_4x()
