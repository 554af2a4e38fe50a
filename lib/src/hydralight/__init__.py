"""hydralight: a Lightning + Hydra project template. Importing it is cheap: torch loads only when training."""

__version__ = "0.1.0"
