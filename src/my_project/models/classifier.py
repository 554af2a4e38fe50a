"""An image classifier LightningModule built from plain configs, so checkpoints load with `weights_only=True`."""

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from hydralight.modules import (
    STAGES,
    EpochMetrics,
    WeightedMean,
    apply_tensor_parallel,
    build,
    plain,
    with_scheduler,
)


class Classifier(EpochMetrics, LightningModule):
    """Cross-entropy classification with accuracy and mean loss per stage, and the best validation accuracy.

    `net`, `optimizer` and `scheduler` are configs (conf/model/...), not objects: the module builds them itself
    and saves the configs as hyperparameters, so `Classifier.load_from_checkpoint(path)` needs nothing else.
    """

    def __init__(
        self,
        net: Mapping,
        optimizer: Mapping,
        scheduler: Mapping | None = None,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "net": plain(net),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler) or None,  # an empty scheduler config means a constant LR
                "num_classes": num_classes,
            }
        )
        self.net: nn.Module = build(self.hparams.net)
        # ModuleDict keys cannot be "train" (nn.Module.train), hence the "_" suffix.
        self.accuracy = nn.ModuleDict({f"{s}_": MulticlassAccuracy(num_classes, average="micro") for s in STAGES})
        self.mean_loss = nn.ModuleDict({f"{s}_": WeightedMean() for s in STAGES})
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # part of the checkpoint, so a resumed run keeps its best
        self._logged_stages: set[str] = set()  # stages whose metric objects are logged in the current epoch

    @property
    def example_input_array(self) -> Tensor | None:
        """One zero sample of the net config's `input_shape`, in the parameters' dtype (so `64-true` and `bf16-true`
        runs can pass it too): the shape export traces and the model summary reports."""
        shape = (self.hparams.net or {}).get("input_shape")
        if not shape:
            return None
        parameter = next(self.parameters(), None)
        return torch.zeros(1, *shape, dtype=parameter.dtype if parameter is not None else None)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        # `update`, not `__call__`: no per-batch value to compute. The metric objects are logged once per epoch
        # (each `self.log` costs ~0.3 ms of Lightning bookkeeping on a CPU), from the epoch's first step rather than
        # an epoch-end hook: callbacks' `on_train_epoch_end` runs before the module's, and would read last epoch's
        # values. Lightning keeps the object, computes it (synced across DDP ranks) at epoch end, and resets it.
        accuracy, mean_loss = self.accuracy[f"{stage}_"], self.mean_loss[f"{stage}_"]
        accuracy.update(logits, y)
        mean_loss.update(loss.detach(), weight=len(y))  # weighted: a short last batch counts for what it holds
        if stage not in self._logged_stages:
            self._logged_stages.add(stage)
            self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")
        if self._loggers_write_this_step():
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # the sanity check's untrained accuracy is no "best"
            return
        self.val_acc_best(self.accuracy["val_"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    @torch.no_grad()
    def predict_step(self, batch: tuple[Tensor, ...] | Tensor, batch_idx: int) -> dict[str, Tensor]:
        """Per sample: the class, its probability, the label when the batch has one, every class's probability
        (predict.py writes them as the CSV columns prediction, confidence, [label,] prob_0 ...)."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        probabilities = self(x).softmax(dim=-1)
        row = {"prediction": probabilities.argmax(dim=-1), "confidence": probabilities.amax(dim=-1)}
        if isinstance(batch, list | tuple) and len(batch) > 1:
            row["label"] = batch[1]
        row["prob"] = probabilities
        return row

    def configure_model(self) -> None:
        """strategy=model_parallel: the net's tensor-parallel plan (the MLP has one; see mlp.py)."""
        apply_tensor_parallel(self, self.net)

    def configure_optimizers(self) -> Any:
        return with_scheduler(self, build(self.hparams.optimizer)(self.parameters()))
