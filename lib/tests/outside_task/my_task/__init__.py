"""A task of its own, outside hydralight: what a user adding a task writes (lib/tests/test_outside_task.py runs it)."""

from my_task.boring import LoggingBoringModel
from my_task.gan import PointsDataModule, PointsGAN
from my_task.regression import RegressionDataModule, RegressionModule

__all__ = ["LoggingBoringModel", "PointsDataModule", "PointsGAN", "RegressionDataModule", "RegressionModule"]
