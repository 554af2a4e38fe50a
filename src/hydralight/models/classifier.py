"""An image classifier LightningModule built from plain configs, so checkpoints load with `weights_only=True`."""

import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

STAGES = ("train", "val", "test")


def plain(config: Mapping | None) -> dict | None:
    """A resolved, plain-dict copy: what `save_hyperparameters` may store without breaking weights-only loading."""
    if config is None:
        return None
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)


def build(config: Mapping, *args: Any) -> Any:
    """Hydra instantiate with plain containers throughout (a ListConfig in an optimizer's betas ends up in its
    state dict, and from there in every checkpoint)."""
    return instantiate(config, *args, _convert_="all")


class Classifier(LightningModule):
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
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "net": plain(net),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler) or None,  # an empty scheduler config means a constant LR
                "num_classes": num_classes,
                "compile": compile,
            }
        )
        self.net: nn.Module = build(self.hparams.net)
        if compile:
            self.net.compile()  # in place: parameter names keep no `_orig_mod.` prefix
        # ModuleDict keys cannot be "train" (nn.Module.train), hence the "_" suffix.
        self.accuracy = nn.ModuleDict({f"{s}_": MulticlassAccuracy(num_classes, average="micro") for s in STAGES})
        self.mean_loss = nn.ModuleDict({f"{s}_": MeanMetric() for s in STAGES})
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # part of the checkpoint, so a resumed run keeps its best

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        accuracy, mean_loss = self.accuracy[f"{stage}_"], self.mean_loss[f"{stage}_"]
        accuracy(logits, y)
        mean_loss(loss.detach(), weight=len(y))  # weighted: a short last batch counts for what it holds
        # Logging the metric objects lets torchmetrics compute and sync them once per epoch (DDP included).
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")
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
        x = batch[0] if isinstance(batch, list | tuple) else batch
        probabilities = self(x).softmax(dim=-1)
        return {"preds": probabilities.argmax(dim=-1), "probs": probabilities}

    def configure_optimizers(self) -> Any:
        optimizer = build(self.hparams.optimizer)(self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        lr_scheduler = dict(self.hparams.scheduler)  # Lightning's lr_scheduler dict: interval, monitor, ...
        factory = build(lr_scheduler.pop("scheduler"))
        kwargs = {}
        if "total_steps" in inspect.signature(factory.func).parameters and "total_steps" not in factory.keywords:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)  # OneCycleLR
        lr_scheduler["scheduler"] = factory(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler}
