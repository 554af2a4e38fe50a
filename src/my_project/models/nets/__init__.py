"""Plain nn.Modules: no Lightning inside, usable in any PyTorch code."""
