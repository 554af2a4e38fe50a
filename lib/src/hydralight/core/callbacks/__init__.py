"""The project's own Lightning callbacks."""

from hydralight.core.callbacks.freeze import Freeze
from hydralight.core.callbacks.gradient_guard import GradientGuard
from hydralight.core.callbacks.last_checkpoint import LastCheckpoint
from hydralight.core.callbacks.metrics_json import MetricsJson
from hydralight.core.callbacks.model_summary import LayersSummary
from hydralight.core.callbacks.plots import TrainingPlots
from hydralight.core.callbacks.preemption import Preemption
from hydralight.core.callbacks.resume_state import ResumeState
from hydralight.core.callbacks.task_record import TaskRecord
from hydralight.core.callbacks.tuning import LRFinder

__all__ = [
    "Freeze",
    "GradientGuard",
    "LRFinder",
    "LastCheckpoint",
    "LayersSummary",
    "MetricsJson",
    "Preemption",
    "ResumeState",
    "TaskRecord",
    "TrainingPlots",
]
