"""hydralight: a Lightning + Hydra project template. Importing the package is cheap; torch loads on first training use."""

__version__ = "0.1.0"
