"""Plain nn.Modules: no Lightning inside, usable in any PyTorch code."""

from my_project.models.nets.cnn import ResNetCNN
from my_project.models.nets.mlp import MLP
from my_project.models.nets.transformer import Transformer  # copier:if gpt_example

__all__ = [
    "MLP",
    "ResNetCNN",
    "Transformer",  # copier:if gpt_example
]
