"""Pictures at the end of training: learning curves and confusion matrices as PNGs in the run dir and in image loggers.

matplotlib is optional (`pip install -e ".[plots]"`). Nothing here imports it until a picture is drawn, and a run that
asks for pictures without it stops before training with a message that says what to install. The drawing functions
take plain numbers and return a matplotlib Figure, so the notebooks draw the same pictures from a finished run.
"""

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from hydralight.core.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

MATPLOTLIB_MISSING = (
    "callbacks=plots draws its pictures with matplotlib, which is not installed. "
    "Install it with: pip install -e '.[plots]'  (or train without the plots callback)."
)
STAGES = ("train", "val", "test")


def require_matplotlib() -> None:
    """A UserError naming the fix when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise UserError(MATPLOTLIB_MISSING) from error


def _figure(width: float, height: float) -> "Figure":
    """A Figure outside pyplot: no GUI backend, no global state, safe in a training process."""
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def confusion_matrix_figure(
    matrix: np.ndarray | Tensor, class_names: Sequence[str] | None = None, title: str = "Confusion matrix"
) -> "Figure":
    """Rows: true class, columns: predicted class; each cell shows its count, shaded by the share of its row."""
    counts = np.asarray(matrix, dtype=np.int64)
    names = [str(name) for name in (class_names if class_names is not None else range(len(counts)))]
    row_share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 0.45 * len(counts)
    figure = _figure(size + 1.0, size)
    ax = figure.add_subplot()
    image = ax.imshow(row_share, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, label="share of the true class")
    for (row, col), count in np.ndenumerate(counts):
        if count:
            color = "white" if row_share[row, col] > 0.5 else "black"
            ax.text(col, row, str(count), ha="center", va="center", fontsize=8, color=color)
    ticks = np.arange(len(names))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=names, yticklabels=names, xlabel="predicted", ylabel="true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title} (accuracy {accuracy:.3f}, n={counts.sum()})")
    return figure


def learning_curves_figure(curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]]) -> "Figure":
    """One panel per metric (loss, acc, ...), one line per stage: `curves[metric][stage] = [(epoch, value), ...]`."""
    figure = _figure(4.2 * max(len(curves), 1), 3.4)
    from matplotlib.ticker import MaxNLocator  # after _figure, which says what to install when it is missing

    metrics = sorted(curves)
    for index, metric in enumerate(metrics, start=1):
        ax = figure.add_subplot(1, max(len(metrics), 1), index)
        for stage, points in sorted(curves[metric].items()):
            epochs, values = zip(*points, strict=True) if points else ((), ())
            ax.plot(epochs, values, marker="o", markersize=3, label=stage)
        ax.set(title=metric, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return figure


def curves_from_history(history: Sequence[Mapping[str, float]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per-epoch rows like {"epoch": 0, "train/loss": .., "val/acc": ..} -> {metric: {stage: [(epoch, value)]}}.

    `*_step` values (one batch), `*_best` (a running maximum) and the speed and memory figures (callbacks.throughput)
    are left out: they are not learning curves.
    """
    curves: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in history:
        for name, value in row.items():
            stage, _, metric = name.partition("/")
            if stage in STAGES and metric and not metric.endswith(("_step", "_best", "_per_s", "step_s", "_mib")):
                curves[metric][stage].append((row["epoch"], value))
    return {metric: dict(stages) for metric, stages in curves.items()}


def is_class_labels(labels: object) -> bool:
    """An integer tensor, as a classifier's targets are (a regression's are floats)."""
    integer = isinstance(labels, Tensor) and not (labels.is_floating_point() or labels.is_complex())
    return integer and labels.dtype != torch.bool


def save_figure(figure: "Figure", path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def figure_to_rgb(figure: "Figure") -> np.ndarray:
    """The figure as an (H, W, 3) uint8 array, for loggers that take pixels (TensorBoard)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def send_to_loggers(loggers: Sequence[Logger], name: str, figure: "Figure", path: Path, step: int) -> None:
    """TensorBoard gets pixels, MLflow the PNG as an artifact, W&B the PNG as an image; other loggers nothing."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(name, figure_to_rgb(figure), global_step=step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="plots")
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=name, images=[str(path)], step=step)


class TrainingPlots(Callback):
    """At the end of fit: learning curves and the last validation epoch's confusion matrix; at the end of test: the
    test confusion matrix. PNGs go to `dirpath` (default `<run dir>/plots`) and to the loggers that take images.

    The confusion matrices run the model once more on each evaluation batch (the LightningModule's steps need not
    return predictions); counts are summed over DDP ranks. They need a classifier: batches of (inputs, integer
    labels) and a forward that returns a row of class scores per sample. Any other task (a regression, Lightning's
    BoringModel) gets its learning curves only, and one log line saying why. The per-epoch history is part of the
    checkpoint, so a resumed run draws its whole curve.
    """

    def __init__(self, dirpath: str | Path = "plots", class_names: Sequence[str] | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.class_names = list(class_names) if class_names is not None else None
        self.history: list[dict[str, float]] = []
        self._counts: dict[str, Tensor] = {}
        self.confusion: dict[str, np.ndarray] = {}  # stage -> the last epoch's counts
        self.confusion_epoch: dict[str, int] = {}
        self.saved: list[Path] = []
        self.no_confusion: str | None = None  # why this task gets no confusion matrix, once its first batch told

    @property
    def state_key(self) -> str:
        return "TrainingPlots"

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(row) for row in state_dict.get("history", [])]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        require_matplotlib()  # before any training, not after it

    # Confusion counts: reset at each evaluation epoch's start, summed over ranks at its end.
    def _start(self, stage: str) -> None:
        self._counts.pop(stage, None)

    def _skip_confusion(self, pl_module: LightningModule, reason: str) -> None:
        """Decided from the batch's and the output's types and shapes: the same on every rank, so no rank waits in
        `_end`'s reduce for another that counts nothing."""
        self.no_confusion = reason
        if rank_zero_only.rank == 0:
            log.info("callbacks=plots: no confusion matrix for %s: %s; it gets its learning curves.",
                     type(pl_module).__name__, reason)  # fmt: skip

    @torch.no_grad()
    def _count(self, trainer: Trainer, pl_module: LightningModule, batch: Any, stage: str) -> None:
        if self.no_confusion is not None:
            return
        if not (isinstance(batch, list | tuple) and len(batch) >= 2 and is_class_labels(batch[1])):
            return self._skip_confusion(pl_module, "its batches are not (inputs, integer class labels)")
        x, y = batch[0], batch[1]
        precision = trainer.precision_plugin
        with precision.forward_context():
            logits = pl_module(precision.convert_input(x))
        if not (isinstance(logits, Tensor) and logits.ndim == 2 and len(logits) == y.numel()):
            return self._skip_confusion(pl_module, "its forward returns no row of class scores per sample")
        preds = logits.argmax(dim=-1).flatten()
        num_classes = logits.shape[-1]
        counts = self._counts.get(stage)
        if counts is None:
            counts = self._counts[stage] = torch.zeros(num_classes, num_classes, dtype=torch.long, device=preds.device)
        index = y.flatten().to(preds.device) * num_classes + preds
        counts += torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)

    def _end(self, trainer: Trainer, stage: str) -> None:
        counts = self._counts.pop(stage, None)
        if counts is None:
            return
        total = trainer.strategy.reduce(counts, reduce_op="sum")  # every rank takes part; only rank 0 draws
        self.confusion[stage] = total.cpu().numpy()
        self.confusion_epoch[stage] = trainer.current_epoch

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("val")

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        if not trainer.sanity_checking:
            self._count(trainer, pl_module, batch, "val")

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._end(trainer, "val")

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("test")

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        self._count(trainer, pl_module, batch, "test")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(trainer, "test")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Runs after the epoch's validation: the row holds train and val metrics of this epoch."""
        row = {"epoch": float(trainer.current_epoch)}
        for name, value in trainer.callback_metrics.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                row[name] = float(value)
        self.history.append(row)

    @rank_zero_only
    def _draw(self, trainer: Trainer, name: str, figure: "Figure") -> None:
        path = save_figure(figure, self.dirpath / f"{name}.png")
        send_to_loggers(trainer.loggers, name, figure, path, step=trainer.global_step)
        self.saved.append(path)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        curves = curves_from_history(self.history)
        if curves:
            self._draw(trainer, "learning_curves", learning_curves_figure(curves))
        if "val" in self.confusion:
            title = f"Validation, epoch {self.confusion_epoch['val']}"
            figure = confusion_matrix_figure(self.confusion["val"], self.class_names, title)
            self._draw(trainer, "confusion_matrix_val", figure)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "test" in self.confusion:
            figure = confusion_matrix_figure(self.confusion["test"], self.class_names, "Test")
            self._draw(trainer, "confusion_matrix_test", figure)
