"""A regression task that holds every kind of state a resumed run must restore: dropout (the global RNG), Adam's
moments, an optional schedule sized by the run (`hydralight.modules.with_scheduler`), and shuffled loaders whose
position the checkpoint keeps (the library's InMemoryDataModule; PreparedDataModule on disk, from `source`). It logs
`<stage>/loss` per epoch and `train/loss_step` at every step. What the machinery's resume, checkpoint and error
tests train (`model=stateful data=stateful` in hydralight.testing's project), beside the plain regression of
hydralight.testing.tasks."""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from hydralight.data.base import InMemoryDataModule, split_indices
from hydralight.modules import build, plain, with_scheduler

if TYPE_CHECKING:
    from hydralight.data.sources import ArraySource


class DropoutNet(nn.Sequential):
    """in_features -> hidden -> 1, with a tanh and a dropout between."""

    def __init__(self, in_features: int = 4, hidden: int = 32, dropout: float = 0.1) -> None:
        super().__init__(nn.Linear(in_features, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class StatefulRegression(LightningModule):
    """`net`, `optimizer` (a `_partial_` optimizer) and `scheduler` (Lightning's lr_scheduler dict, its `scheduler`
    a `_partial_`) are configs the module builds itself, fit by mean squared error."""

    def __init__(self, net: Mapping, optimizer: Mapping, scheduler: Mapping | None = None) -> None:
        super().__init__()
        self.save_hyperparameters({"net": plain(net), "optimizer": plain(optimizer), "scheduler": plain(scheduler)})
        self.net: nn.Module = build(self.hparams.net)
        self.example_input_array = torch.zeros(1, self.hparams.net.get("in_features", 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")
        self.log("train/loss_step", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        return {"prediction": self(batch[0])}

    def configure_optimizers(self) -> Any:
        return with_scheduler(self, build(self.hparams.optimizer)(self.parameters()))


def regression_data(n_samples: int, in_features: int) -> tuple[Tensor, Tensor]:
    """`y = x . w + noise` from a generator of its own: the same rows in every process and run."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n_samples, in_features, generator=generator)
    y = x @ torch.randn(in_features, generator=generator) + 0.1 * torch.randn(n_samples, generator=generator)
    return x, y


def split_sizes(n_samples: int, val_fraction: float, test_fraction: float) -> list[int]:
    return [round(n_samples * test_fraction), round(n_samples * val_fraction)]


class RegressionSplits(InMemoryDataModule):
    """The regression rows split into test, val and train by `split_seed` (InMemoryDataModule's loaders: shuffled by
    seed and epoch, workers, k-fold, their position in every checkpoint)."""

    def __init__(
        self,
        n_samples: int = 800,
        in_features: int = 4,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(input_shape=[in_features], **kwargs)
        self.n_samples, self.in_features = n_samples, in_features
        self.val_fraction, self.test_fraction = val_fraction, test_fraction

    def load_splits(self) -> dict[str, TensorDataset]:
        x, y = regression_data(self.n_samples, self.in_features)
        sizes = split_sizes(self.n_samples, self.val_fraction, self.test_fraction)
        test, val, train = split_indices(self.n_samples, sizes, self.split_seed)
        return {"train": TensorDataset(x[train], y[train]), "val": TensorDataset(x[val], y[val]),
                "test": TensorDataset(x[test], y[test])}  # fmt: skip


def source(
    n_samples: int = 800, in_features: int = 4, val_fraction: float = 0.1, test_fraction: float = 0.1,
    split_seed: int = 0,
) -> "ArraySource":  # fmt: skip
    """The same rows and splits as RegressionSplits, as `python prepare.py` writes them for PreparedDataModule
    (`python prepare.py source=stateful`, read by data=ondisk_stateful)."""
    from hydralight.data.sources import ArraySource

    x, y = regression_data(n_samples, in_features)
    test, val, train = split_indices(n_samples, split_sizes(n_samples, val_fraction, test_fraction), split_seed)
    splits = {"train": train.numpy(), "val": val.numpy(), "test": test.numpy()}
    return ArraySource({"x": x.numpy(), "y": y.numpy()}, splits, {"in_features": in_features})
