"""A tiny regression task whose network is a config the module instantiates itself, as many users' modules do:
what a checkpoint's hyperparameters can reach, and what the machinery's tests train instead of an example."""

from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningDataModule, LightningModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset


class TinyNet(nn.Sequential):
    """in_features -> hidden -> 1 with a tanh between."""

    def __init__(self, in_features: int = 4, hidden: int = 8) -> None:
        super().__init__(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))


TINY_NET = {"_target_": f"{TinyNet.__module__}.TinyNet", "in_features": 4, "hidden": 8}


class NetRegression(LightningModule):
    """`net` (a `_target_` config) fit by mean squared error with SGD; logs `<stage>/loss`."""

    def __init__(self, net: Mapping[str, Any] | None = None, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters({"net": dict(net or TINY_NET), "lr": lr})
        self.net: nn.Module = instantiate(self.hparams.net, _convert_="all")
        self.example_input_array = torch.zeros(1, self.hparams.net.get("in_features", 4))  # export's sample

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        return {"prediction": self(batch[0])}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class NoisyTestRegression(NetRegression):
    """NetRegression whose test loss draws random numbers (as a GAN's test draws its noise): a test reproduces only
    from the same seed."""

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        noise = torch.rand(len(x), device=x.device)
        self.log(
            "test/loss", nn.functional.mse_loss(self(x) + noise, y), on_step=False, on_epoch=True, batch_size=len(x)
        )


class SplitsData(LightningDataModule):
    """A data module of ready-made splits: its subclass sets `self.splits` (a dataset for each of train, val and test)
    and `self.batch_size`; training batches are shuffled, predict reads the test split."""

    splits: dict[str, Dataset]
    batch_size: int

    def _loader(self, stage: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.splits[stage], batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")


class RegressionData(SplitsData):
    """`y = x . w + noise` from its own seeded generator (the same data in every process), split in thirds."""

    def __init__(self, n_samples: int = 96, in_features: int = 4, batch_size: int = 16, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(n_samples, in_features, generator=generator)
        y = x @ torch.randn(in_features, generator=generator) + 0.1 * torch.randn(n_samples, generator=generator)
        third = n_samples // 3
        self.splits = {
            stage: TensorDataset(x[i * third : (i + 1) * third], y[i * third : (i + 1) * third])
            for i, stage in enumerate(("train", "val", "test"))
        }
        self.batch_size = batch_size
