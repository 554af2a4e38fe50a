"""LightningModules, one per task (classifier, gpt), and the plain nn.Modules they train (mlp, cnn, transformer: no
Lightning inside, usable in any PyTorch code). Each config in conf/model/ names one of these by its module path."""
