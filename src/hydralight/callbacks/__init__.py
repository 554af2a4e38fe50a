"""The project's own Lightning callbacks."""

from hydralight.callbacks.gradient_guard import GradientGuard
from hydralight.callbacks.metrics_json import MetricsJson
from hydralight.callbacks.model_summary import LayersSummary
from hydralight.callbacks.plots import TrainingPlots
from hydralight.callbacks.preemption import Preemption
from hydralight.callbacks.rng_state import RNGState
from hydralight.callbacks.task_record import TaskRecord
from hydralight.callbacks.tuning import LRFinder

__all__ = [
    "GradientGuard",
    "LRFinder",
    "LayersSummary",
    "MetricsJson",
    "Preemption",
    "RNGState",
    "TaskRecord",
    "TrainingPlots",
]
