"""LightningModules. Each wraps a plain net from `hydralight.models.nets`."""

from hydralight.models.classifier import Classifier
from hydralight.models.gpt import GPT

__all__ = ["GPT", "Classifier"]
