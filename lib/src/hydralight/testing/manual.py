"""A module that steps its own optimizers (`automatic_optimization = False`), as a GAN does: two networks, two
optimizers, one step of each per batch. What the machinery's tests train to prove manual optimization works and the
switches Lightning cannot apply to it are refused in one line."""

from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from hydralight.testing.tasks import TINY_NET


class TwoStepRegression(LightningModule):
    """Two nets fit the same targets by mean squared error, each with its own SGD stepped by hand; logs
    `<stage>/loss` (of their mean)."""

    def __init__(self, net: Mapping[str, Any] | None = None, lr: float = 0.05) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.save_hyperparameters({"net": dict(net or TINY_NET), "lr": lr})
        self.first: nn.Module = instantiate(self.hparams.net, _convert_="all")
        self.second: nn.Module = instantiate(self.hparams.net, _convert_="all")
        self.example_input_array = torch.zeros(1, self.hparams.net.get("in_features", 4))  # export's sample

    def forward(self, x: Tensor) -> Tensor:
        return ((self.first(x) + self.second(x)) / 2).squeeze(-1)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        for net, optimizer in zip((self.first, self.second), self.optimizers(), strict=True):
            loss = nn.functional.mse_loss(net(x).squeeze(-1), y)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        self.log("train/loss", nn.functional.mse_loss(self(x), y), on_step=False, on_epoch=True, batch_size=len(x))

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        self.log(f"{stage}/loss", nn.functional.mse_loss(self(x), y), on_step=False, on_epoch=True, batch_size=len(x))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.SGD(net.parameters(), lr=self.hparams.lr) for net in (self.first, self.second)]
