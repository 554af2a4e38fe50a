"""Task-agnostic fixtures for testing the machinery (and a project's own tests): tasks that know nothing of the
examples."""

from hydralight.testing.tasks import NetRegression, RegressionData

__all__ = ["NetRegression", "RegressionData"]
