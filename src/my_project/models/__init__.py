"""LightningModules, one per task, and the plain nn.Modules they train (no Lightning inside, usable in any PyTorch
code). Each config in conf/model/ names one of these by its module path."""
