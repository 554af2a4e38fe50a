"""LightningDataModules. Each config in conf/data/ names one of these by its module path."""
