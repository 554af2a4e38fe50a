"""LightningModules. Each wraps a plain net from `hydralight.models.nets`."""

from hydralight.models.classifier import Classifier

__all__ = ["Classifier"]
