"""What every run reports of itself: the final metrics in a file, the model's layers at the start, and the speed and
memory while it trains.

- `MetricsJson`: writes `<run dir>/metrics.json` (a contract: sweeps and scripts read it); the train task adds it to
  every run, whatever its callbacks config says.
- `LayersSummary` (callbacks.model_summary): the model summary a run prints at the start, listing layers only:
  torchmetrics' metric objects are nn.Modules too, and Lightning's summary shows each of them (and their
  containers) as a layer of 0 parameters.
- `Throughput` (callbacks.throughput): samples/s (and tokens/s where the task says what a token is), the time per
  optimizer step and the peak memory, logged on Lightning's log steps and at each epoch's end, so metrics.json holds
  the last epoch's figures beside its other `train/` metrics.

Lightning's own ThroughputMonitor does not fit the harness: its figures never reach `trainer.callback_metrics`
(hence metrics.json), it shows rates only once its 100-batch window is full (never on a short epoch), fails on a
batch its `batch_size_fn` cannot count, needs one for every task, synchronizes CUDA after every batch, warns on every
run of a module without `flops_per_batch`, and has no step time or memory.
"""

import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichModelSummary
from lightning.pytorch.strategies import DeepSpeedStrategy
from lightning.pytorch.utilities.model_summary import ModelSummary as Summary
from torch import Tensor, nn
from torchmetrics import Metric

from hydralight.compat.lightning import batches_that_stepped, should_accumulate, writes_logs_this_step
from hydralight.core import files

try:
    import resource
except ImportError:  # Windows: no peak RSS
    resource = None

log = logging.getLogger(__name__)

SAMPLES_PER_S = "train/samples_per_s"
STEP_S = "train/step_s"
PEAK_MEMORY_MIB = "train/peak_memory_mib"


def monitoring_checkpoint(trainer: Trainer, monitor: str | None) -> ModelCheckpoint | None:
    """The ModelCheckpoint that keeps the best `monitor` (whatever its place among the callbacks), or None."""
    matching = [callback for callback in trainer.checkpoint_callbacks if getattr(callback, "monitor", None) == monitor]
    return matching[0] if matching else None


def best_metrics(trainer: Trainer, monitor: str | None) -> dict[str, float]:
    """`{"<monitor>_best": score}` from the checkpoint that monitors it (the sweep metric); {} if none does."""
    checkpointer = monitoring_checkpoint(trainer, monitor)
    if checkpointer is None or checkpointer.best_model_score is None:
        return {}
    return {f"{monitor}_best": float(checkpointer.best_model_score)}


class MetricsJson(Callback):
    """After fit and after test, merge the final metrics as floats into `path` (rank 0 only), with the best
    `monitor` as `<monitor>_best`.

    Merging with what the file already holds (rather than with what this object saw) keeps fit's metrics when test
    runs in other processes, as under `strategy=ddp_spawn`, and a resumed run updates its dir's file.
    """

    def __init__(self, path: str | Path, monitor: str | None = None) -> None:
        self.path = Path(path)
        self.monitor = monitor

    def read(self) -> dict[str, float]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def write(self, metrics: dict[str, float]) -> None:
        """Whole or not at all: a reader never sees half a file."""
        files.write_text(self.path, json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")

    def _update(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = self.read()
        for name, value in trainer.callback_metrics.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                metrics[name] = float(value)
        for name, value in best_metrics(trainer, self.monitor).items():
            if name not in trainer.callback_metrics:  # a module's own `<monitor>_best` (val/acc_best) comes first
                metrics[name] = value
        self.write(metrics)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._update(trainer)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._update(trainer)


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


def first_tensor(batch: Any) -> Tensor | None:
    """The batch's first tensor, depth first through mappings, lists, tuples and dataclasses; None if it has none."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping):
        batch = batch.values()
    elif is_dataclass(batch) and not isinstance(batch, type):
        batch = [getattr(batch, field.name) for field in fields(batch)]
    elif not isinstance(batch, list | tuple):  # a string, a number, an object of the task's own
        return None
    for item in batch:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def first_tensor_length(batch: Any) -> int | None:
    """Samples in a batch: the leading dimension of its first tensor (None: no tensor with one)."""
    tensor = first_tensor(batch)
    return tensor.shape[0] if tensor is not None and tensor.ndim > 0 else None


def first_tensor_numel(batch: Any) -> int | None:
    """Items in a batch (tokens of a (B, T) batch of token ids): the elements of its first tensor."""
    tensor = first_tensor(batch)
    return tensor.numel() if tensor is not None else None


def peak_memory_mib(device: torch.device) -> float | None:
    """The peak CUDA memory allocated on a GPU; elsewhere the process's peak resident set (RSS), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


@dataclass
class _Span:
    """What one stretch of training did; `unsized`/`uncounted`: batches whose samples/items could not be counted."""

    time: float = 0.0
    steps: int = 0
    samples: int = 0
    items: int = 0
    unsized: int = 0
    uncounted: int = 0


class Throughput(Callback):
    """Logs `train/samples_per_s`, `train/step_s` (seconds per optimizer step), `train/peak_memory_mib` and, with a
    `length_fn`, `train/<items_name>_per_s`: on each of Lightning's log steps (`trainer.log_every_n_steps`) over the
    steps since the previous one, and at each epoch's end over the epoch.

    The clock runs from a training batch's start to the next pause: validation, checkpointing and the epoch's end
    are left out, data loading between batches is not. It reads the clock (and waits for CUDA) only where it logs,
    so each batch costs a counter update. Under DDP the rates are world-wide (all ranks' samples over the slowest
    rank's time) and the memory the largest rank's. A batch `batch_size_fn` cannot count (None) is said once and
    left out: no samples/s for a stretch that holds one.
    """

    def __init__(
        self,
        batch_size_fn: Callable[[Any], int | None] | None = None,
        length_fn: Callable[[Any], int | None] | None = None,
        items_name: str = "tokens",
    ) -> None:
        self.batch_size_fn = batch_size_fn or first_tensor_length
        self.length_fn = length_fn
        self.items_name = items_name
        self.items_per_s = f"train/{items_name}_per_s"
        self._started: float | None = None  # when the running stretch began; None while paused
        self._since_log = _Span()
        self._epoch = _Span()
        self._told_unsized = False
        self.last_epoch: dict[str, float] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.strategy.root_device.type == "cuda":  # a peak of this fit, not of an earlier job in the process
            torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._since_log, self._epoch = _Span(), _Span()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._started is None:
            self._started = self._now(trainer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        samples = self.batch_size_fn(batch)
        items = self.length_fn(batch) if self.length_fn is not None else 0
        for span in (self._since_log, self._epoch):
            if samples is None:
                span.unsized += 1
            else:
                span.samples += samples
            if items is None:
                span.uncounted += 1
            else:
                span.items += items
        if samples is None and not self._told_unsized:
            self._told_unsized = True
            if trainer.is_global_zero:
                log.info(
                    "callbacks.throughput: cannot tell how many samples a batch of type %s holds (%s found none), "
                    "so train/samples_per_s is not logged for the steps that have one. Set "
                    "callbacks.throughput.batch_size_fn to a function that counts them.",
                    type(batch).__name__,
                    getattr(self.batch_size_fn, "__name__", "batch_size_fn"),
                )
        # Lightning's own step and log schedule, as its ThroughputMonitor reads it: rows land on its log steps.
        if should_accumulate(trainer):
            return
        self._since_log.steps += 1
        self._epoch.steps += 1
        if writes_logs_this_step(trainer):
            self._pause(trainer)
            self._log(trainer, self._rates(trainer, self._since_log), step=self._logged_step(trainer))
            self._since_log = _Span()
            self._started = self._now(trainer)  # the gather and the log above are not training's time

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._pause(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._pause(trainer)
        self.last_epoch = self._rates(trainer, self._epoch)
        if not self.last_epoch:
            return
        # Lightning logs its epoch-end row on the epoch's last step. As LearningRateMonitor does, the callback metrics
        # get the values too: what metrics.json, the final table, checkpoints and early stopping read.
        self._log(trainer, self.last_epoch, step=self._logged_step(trainer) - 1)
        metrics = {name: torch.tensor(value, dtype=torch.float64) for name, value in self.last_epoch.items()}
        trainer.callback_metrics.update(metrics)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or not self.last_epoch:
            return
        figures = [f"{self.last_epoch[SAMPLES_PER_S]:,.0f} samples/s"] if SAMPLES_PER_S in self.last_epoch else []
        if self.items_per_s in self.last_epoch:
            figures.append(f"{self.last_epoch[self.items_per_s]:,.0f} {self.items_name}/s")
        figures.append(f"{self.last_epoch[STEP_S] * 1000:.3g} ms/step")
        if PEAK_MEMORY_MIB in self.last_epoch:
            where = "CUDA allocated" if trainer.strategy.root_device.type == "cuda" else "process RSS"
            figures.append(f"peak memory {self.last_epoch[PEAK_MEMORY_MIB]:,.0f} MiB ({where})")
        devices = f" over {trainer.world_size} processes" if trainer.world_size > 1 else ""
        log.info("Throughput (last epoch%s): %s", devices, ", ".join(figures))

    @staticmethod
    def _logged_step(trainer: Trainer) -> int:
        """The step Lightning writes its own rows on (optimizer steps so far, as LearningRateMonitor reads it)."""
        return batches_that_stepped(trainer)

    @staticmethod
    def _log(trainer: Trainer, metrics: dict[str, float], step: int) -> None:
        """Straight to the loggers, as Lightning's LearningRateMonitor does: `self.log` would cost more than all the
        rest of this callback together, and the loggers write to disk on their own schedule."""
        if trainer.is_global_zero and metrics:
            for logger in trainer.loggers:
                logger.log_metrics({**metrics, "epoch": trainer.current_epoch}, step=step)

    @staticmethod
    def _now(trainer: Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":  # the queued kernels belong to the stretch being timed
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def _pause(self, trainer: Trainer) -> None:
        """Stop the clock; the time since it started goes to both spans."""
        if self._started is None:
            return
        elapsed = self._now(trainer) - self._started
        self._since_log.time += elapsed
        self._epoch.time += elapsed
        self._started = None

    def _rates(self, trainer: Trainer, span: _Span) -> dict[str, float]:
        """The span's figures, world-wide: every rank calls this at the same steps."""
        device = trainer.strategy.root_device
        seconds, peak = span.time, peak_memory_mib(device)
        counts = [span.samples, span.items, span.unsized, span.uncounted]
        if trainer.world_size > 1:  # one gather: all ranks' counts summed, the slowest rank's time, the largest peak
            local = [seconds, math.nan if peak is None else peak, *counts]
            gathered = trainer.strategy.all_gather(torch.tensor(local, dtype=torch.float64, device=device))
            ranks = gathered.reshape(-1, len(local)).cpu()
            seconds, peak = float(ranks[:, 0].max()), float(ranks[:, 1].max())
            # Under tensor parallelism the processes of a group share their batches: count each batch once.
            from hydralight.data.base import data_shard  # a multi-process run only

            copies = trainer.world_size // data_shard(trainer)[0]
            counts = [int(total) // copies for total in ranks[:, 2:].sum(dim=0)]
        samples, items, unsized, uncounted = counts
        if seconds <= 0 or span.steps == 0:  # the ranks step together: the same steps everywhere
            return {}
        rates = {STEP_S: seconds / span.steps}
        if unsized == 0 and samples > 0:
            rates[SAMPLES_PER_S] = samples / seconds
        if self.length_fn is not None and uncounted == 0 and items > 0:
            rates[self.items_per_s] = items / seconds
        if peak is not None and not math.isnan(peak):
            rates[PEAK_MEMORY_MIB] = peak
        return rates
