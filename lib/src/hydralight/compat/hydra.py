"""Hydra's private surface the library relies on (tested against hydra-core 1.3; `tests/test_compat.py`)."""

from typing import Any

from hydra._internal.utils import _locate as locate  # what instantiate resolves a `_target_` with
from hydra._internal.utils import get_args_parser  # Hydra's own command-line parser

__all__ = ["BASIC_SWEEPER", "get_args_parser", "job_return_value", "locate"]

# Hydra's basic sweeper, by the class path its config names (it re-raises a failed job after its batch).
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def job_return_value(job_return: Any) -> Any:
    """A job's return value or its exception, as stored: `JobReturn.return_value` re-raises a failed job's error."""
    return job_return._return_value
