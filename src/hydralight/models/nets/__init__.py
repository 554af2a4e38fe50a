"""Plain nn.Modules: no Lightning inside, usable in any PyTorch code."""

from hydralight.models.nets.cnn import ResNetCNN
from hydralight.models.nets.mlp import MLP

__all__ = ["MLP", "ResNetCNN"]
