"""A regression whose net and optimizer are both configs the module builds itself (`_recursive_: false`), as the
template's modules keep them, with torchmetrics metric objects besides: what the machinery reads under
`model.optimizer` (its arguments tried before training, Adam's eps under precision=16-true, the learning rate
tune=lr_find records), a net whose constructor refuses a value, and metric objects the model summary leaves out.
`model=configured_regression` in the testing project."""

from collections.abc import Mapping

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanSquaredError

from hydralight.modules import STAGES, build, plain


class DropoutNet(nn.Sequential):
    """in_features -> hidden -> 1 with a tanh and dropout between; nn.Dropout refuses a `dropout` outside [0, 1]."""

    def __init__(self, in_features: int = 4, hidden: int = 8, dropout: float = 0.0) -> None:
        super().__init__(nn.Linear(in_features, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class ConfiguredRegression(LightningModule):
    """`net` and `optimizer` (a `_partial_: true` config, called with the parameters) fit by mean squared error; logs
    `<stage>/loss`, and `<stage>/mse` from a torchmetrics object per stage."""

    def __init__(self, net: Mapping, optimizer: Mapping) -> None:
        super().__init__()
        self.save_hyperparameters({"net": plain(net), "optimizer": plain(optimizer)})
        self.net: nn.Module = build(self.hparams.net)
        # ModuleDict keys cannot be "train" (nn.Module.train), hence the "_" suffix.
        self.mse = nn.ModuleDict({f"{stage}_": MeanSquaredError() for stage in STAGES})
        self.example_input_array = torch.zeros(1, self.hparams.net.get("in_features", 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        prediction = self(x)
        loss = nn.functional.mse_loss(prediction, y)
        self.mse[f"{stage}_"].update(prediction.detach().float(), y.float())
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        self.log(f"{stage}/mse", self.mse[f"{stage}_"], on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build(self.hparams.optimizer)(self.parameters())
