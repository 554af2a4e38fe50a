"""The regression task built as a full-size project's task is, for the machinery that needs more than the tiny one:
- a net of blocks (an nn.ModuleList, which FSDP shards one at a time) with a tensor-parallel plan, applied in the
  module's `configure_model`, and an optional BatchNorm (`model=blocks`);
- its losses kept in metric objects, summed over the processes (DDP reports one process's numbers), and the lowest
  validation loss so far, a metric state saved in the checkpoint that is no weight;
- SGD with momentum and weight decay: an optimizer with a state to save, resume and not carry over;
- the data served by the library's own in-memory datamodule (`data=splits`): a train order fixed by the seed and
  the epoch in any number of processes, and unpadded evaluation shards.
"""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from torchmetrics import MinMetric

from hydralight.data.base import InMemoryDataModule
from hydralight.modules import WeightedMean, apply_tensor_parallel
from hydralight.testing.tasks import NetRegression, RegressionData


class BlockNet(nn.Module):
    """in_features -> `depth` blocks of Linear [-> BatchNorm1d] -> Tanh, `hidden` wide -> a Linear head to 1."""

    def __init__(self, in_features: int = 4, hidden: int = 8, depth: int = 2, batch_norm: bool = False) -> None:
        super().__init__()
        widths = [in_features] + [hidden] * depth
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Linear(width, hidden, bias=not batch_norm),
                *([nn.BatchNorm1d(hidden)] if batch_norm else []),
                nn.Tanh(),
            )
            for width in widths[:-1]
        )
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def tensor_parallel_plan(self) -> dict:
        """Each block's Linear split by its output features across the tensor-parallel processes, its output gathered
        whole again (the BatchNorm after it sees every feature). The head (one output) stays whole on each process."""
        from torch.distributed.tensor import Replicate
        from torch.distributed.tensor.parallel import ColwiseParallel

        return {f"blocks.{i}.0": ColwiseParallel(output_layouts=Replicate()) for i in range(len(self.blocks))}


BLOCK_NET = {"_target_": f"{BlockNet.__module__}.BlockNet", "in_features": 4, "hidden": 8}


class BlockRegression(NetRegression):
    """NetRegression whose losses are metric objects (weighted means, summed over processes), with the lowest
    validation loss as a checkpointed metric state (`val_loss_min`), SGD with `momentum` and `weight_decay`, and
    the net's tensor-parallel plan applied under strategy=model_parallel."""

    def __init__(
        self, net: Mapping[str, Any] | None = None, lr: float = 0.05, momentum: float = 0.0, weight_decay: float = 0.0
    ) -> None:
        super().__init__(net=dict(net or BLOCK_NET), lr=lr)
        self.save_hyperparameters({**self.hparams, "momentum": momentum, "weight_decay": weight_decay})
        self.losses = nn.ModuleDict({f"{stage}_": WeightedMean() for stage in ("train", "val", "test")})
        self.val_loss_min = MinMetric()
        self.val_loss_min.persistent(True)  # in the checkpoint, as a project's best-so-far metric is

    def configure_model(self) -> None:
        apply_tensor_parallel(self, self.net)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        mean = self.losses[f"{stage}_"]
        mean.update(loss.detach(), len(x))
        self.log(f"{stage}/loss", mean, on_step=False, on_epoch=True)
        return loss

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:  # the untrained sanity check is no "lowest so far"
            self.val_loss_min(self.losses["val_"].compute())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hparams = self.hparams
        return torch.optim.SGD(
            self.parameters(), lr=hparams.lr, momentum=hparams.momentum, weight_decay=hparams.weight_decay
        )


class SplitRegressionData(InMemoryDataModule):
    """RegressionData's samples (its seed, its thirds) served by the library's InMemoryDataModule."""

    def __init__(self, n_samples: int = 96, in_features: int = 4, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(input_shape=(in_features,), **kwargs)
        self.n_samples, self.in_features, self.seed = n_samples, in_features, seed

    def load_splits(self) -> dict[str, TensorDataset]:
        return RegressionData(self.n_samples, self.in_features, seed=self.seed).splits
