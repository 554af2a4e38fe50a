"""Strategies Lightning 2 lacks."""

from hydralight.strategies.dp import DataParallelStrategy

__all__ = ["DataParallelStrategy"]
