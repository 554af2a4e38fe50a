"""Plain nn.Modules: no Lightning inside, usable in any PyTorch code."""

from hydralight.models.nets.cnn import ResNetCNN
from hydralight.models.nets.mlp import MLP
from hydralight.models.nets.transformer import Transformer  # copier:if gpt_example

__all__ = [
    "MLP",
    "ResNetCNN",
    "Transformer",  # copier:if gpt_example
]
