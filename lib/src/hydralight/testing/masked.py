"""A tiny task whose module takes a dict of inputs, one of them a mask that changes the output: what export's tests
export every input of, where the regression and the images take one tensor."""

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.utils.data import StackDataset

from hydralight.testing.tasks import SplitsData


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """The mean of `values` (B, T, F) over the steps `mask` (B, T) keeps; a row that keeps none is zero."""
    weights = mask.unsqueeze(-1).to(values.dtype)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


class MaskedMeanRegression(LightningModule):
    """forward(values, mask): a Linear of the masked mean, fit by mean squared error with SGD; logs `<stage>/loss`.
    Its `example_input_array` is a dict, so Lightning (and export) pass the inputs by keyword."""

    def __init__(self, in_features: int = 3, steps: int = 6, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.linear = nn.Linear(in_features, 1)
        self.example_input_array = {
            "values": torch.zeros(1, steps, in_features),
            "mask": torch.ones(1, steps, dtype=torch.long),  # every step kept
        }

    def forward(self, values: Tensor, mask: Tensor) -> Tensor:
        return self.linear(masked_mean(values, mask)).squeeze(-1)

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        loss = nn.functional.mse_loss(self(batch["values"], batch["mask"]), batch["target"])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["target"]))
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"prediction": self(batch["values"], batch["mask"])}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class MaskedMeanData(SplitsData):
    """Dict batches {values, mask, target}: a target that is a linear function of the masked mean plus noise, from its
    own seeded generator, split in thirds. Every mask keeps at least its first step."""

    def __init__(
        self, n_samples: int = 96, in_features: int = 3, steps: int = 6, batch_size: int = 16, seed: int = 0
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        values = torch.randn(n_samples, steps, in_features, generator=generator)
        mask = torch.randint(2, (n_samples, steps), generator=generator)
        mask[:, 0] = 1
        weights = torch.randn(in_features, generator=generator)
        target = masked_mean(values, mask) @ weights + 0.1 * torch.randn(n_samples, generator=generator)
        columns = {"values": values, "mask": mask, "target": target}
        third = n_samples // 3
        self.splits = {
            stage: StackDataset(**{name: column[i * third : (i + 1) * third] for name, column in columns.items()})
            for i, stage in enumerate(("train", "val", "test"))
        }
        self.batch_size = batch_size
