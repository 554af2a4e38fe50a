"""The project's own Lightning callbacks."""

from hydralight.callbacks.metrics_json import MetricsJson

__all__ = ["MetricsJson"]
