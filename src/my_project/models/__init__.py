"""LightningModules, one per task. Each config in conf/model/ names one of these by its module path."""
