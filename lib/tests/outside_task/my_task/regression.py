"""Linear regression with noise: a LightningModule and a LightningDataModule that know nothing of hydralight."""

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


class RegressionModule(pl.LightningModule):
    """A small MLP fit by mean squared error; logs `<stage>/mse`."""

    def __init__(self, in_features: int = 8, hidden: int = 16, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).squeeze(-1)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        mse = nn.functional.mse_loss(self(x), y)
        self.log(f"{stage}/mse", mse, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=stage != "train")
        return mse

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class RegressionDataModule(pl.LightningDataModule):
    """`y = x . w + noise`, drawn from its own seeded generator: the same data in every process."""

    def __init__(self, n_samples: int = 256, in_features: int = 8, noise: float = 0.1, batch_size: int = 32,
                 seed: int = 0) -> None:  # fmt: skip
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(n_samples, in_features, generator=generator)
        y = x @ torch.randn(in_features, generator=generator) + noise * torch.randn(n_samples, generator=generator)
        third = n_samples // 3
        self.splits = {
            "train": TensorDataset(x[:third], y[:third]),
            "val": TensorDataset(x[third : 2 * third], y[third : 2 * third]),
            "test": TensorDataset(x[2 * third :], y[2 * third :]),
        }
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=self.batch_size)
