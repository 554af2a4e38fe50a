"""Strategies Lightning 2 lacks."""

from hydralight.core.strategies.dp import DataParallelStrategy

__all__ = ["DataParallelStrategy"]
