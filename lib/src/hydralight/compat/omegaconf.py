"""OmegaConf's private surface the library relies on (tested against omegaconf 2.3; `tests/test_compat.py`)."""

from typing import Any

__all__ = ["full_key"]


def full_key(node: Any) -> str:
    """The dotted key of `node` from the config's root (`model.net`): what error messages name."""
    return node._get_full_key(None)
