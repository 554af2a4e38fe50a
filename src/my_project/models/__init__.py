"""LightningModules, one per task. Each config in conf/model/ instantiates one of these."""

from my_project.models.classifier import Classifier
from my_project.models.gpt import GPT  # copier:if gpt_example

__all__ = [
    "GPT",  # copier:if gpt_example
    "Classifier",
]
