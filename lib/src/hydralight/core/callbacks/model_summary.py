"""The model summary a run prints at the start, listing layers only: torchmetrics' metric objects are nn.Modules too,
and Lightning's summary shows each of them (and their containers) as a layer of 0 parameters."""

import warnings

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.strategies import DeepSpeedStrategy
from lightning.pytorch.utilities.model_summary import ModelSummary as Summary
from torch import nn
from torchmetrics import Metric


def holds_only_metrics(module: nn.Module) -> bool:
    """A Metric, or a container (ModuleDict, MetricCollection, ...) of nothing but metrics."""
    if isinstance(module, Metric):
        return True
    children = list(module.children())
    return bool(children) and all(holds_only_metrics(child) for child in children)


class _LayersSummary(Summary):
    """Lightning's summary of `model`, without the metric objects and what lies inside them."""

    def __init__(self, model: LightningModule, max_depth: int = 1) -> None:
        with warnings.catch_warnings():
            # Mixed precision keeps the weights in float32, the 32 bits the size estimate then uses: no caveat.
            warnings.filterwarnings("ignore", message=r"Precision \S+-mixed is not supported by the model summary")
            super().__init__(model, max_depth)

    def _metric_names(self) -> list[str]:
        return [name for name, module in self._model.named_modules() if name and holds_only_metrics(module)]

    def _is_metric(self, name: str, metric_names: list[str]) -> bool:
        return any(name == metric or name.startswith(metric + ".") for metric in metric_names)

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        metric_names = self._metric_names()
        return [(name, module) for name, module in super().named_modules if not self._is_metric(name, metric_names)]

    @property
    def total_training_modes(self) -> dict[str, int]:
        metric_names = self._metric_names()
        modes = [module.training for name, module in self._model.named_modules()
                 if name and not self._is_metric(name, metric_names)]  # fmt: skip
        return {"train": modes.count(True), "eval": modes.count(False)}


class LayersSummary(RichModelSummary):
    """Lightning's RichModelSummary without the metric objects."""

    def _summary(self, trainer: Trainer, pl_module: LightningModule) -> Summary:  # compat.MODEL_SUMMARY_HOOK
        if isinstance(trainer.strategy, DeepSpeedStrategy) and trainer.strategy.zero_stage_3:
            return super()._summary(trainer, pl_module)  # DeepSpeed's own summary of sharded parameters
        return _LayersSummary(pl_module, max_depth=self._max_depth)
