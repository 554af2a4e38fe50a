"""A constructor's refusal (its ValueError/TypeError) as one line: the config keys and values its message names, then
the message itself, at the config node that raised. What `validation.instantiate` and the optimizer check raise;
imported only once one refused."""

import re
from collections.abc import Iterable
from typing import Any

from hydra.errors import InstantiationException
from omegaconf import DictConfig

from hydralight.compat.hydra import locate  # what instantiate resolves a `_target_` with
from hydralight.core.errors import UserError


def _mentions(message: str, text: str) -> bool:
    return re.search(rf"(?<![\w.-]){re.escape(text)}(?![\w])", message, re.IGNORECASE) is not None


def _shows_value(message: str, value: object) -> bool:
    """The message quotes this value (or, for a list of numbers, one of its elements: "beta at index 0: 1.5")."""
    values = value if isinstance(value, list) else [value]
    return any(
        isinstance(v, int | float | str) and not isinstance(v, bool) and str(v) and _mentions(message, str(v))
        for v in values
    )


def refused(key: str, target: str, given: dict[str, Any], error: Exception) -> UserError:
    """`error`, raised by `target` built at config `key` from the arguments `given`, as one line: the config key, the
    arguments the message names (else the one whose value it quotes) with their values, then the constructor's own
    message (which usually says what is valid)."""
    message = " ".join(str(error).split())
    culprits = [name for name in given if _mentions(message, name) or _mentions(message, name.replace("_", " "))]
    if not culprits:
        quoted = [name for name, value in given.items() if _shows_value(message, value)]
        culprits = quoted if len(quoted) == 1 else []  # several: a coincidence as likely as not
    named = ", ".join(f"{key}.{name}={given[name]!r}" if key else f"{name}={given[name]!r}" for name in culprits)
    if len(culprits) == 1:
        return UserError(f"{named} is not valid: {message} ({target})")
    if culprits:
        return UserError(f"{named} are not valid together: {message} ({target})")
    return UserError(f"{key or target} is not valid: {target} refused its arguments: {message}")


def innermost(error: InstantiationException) -> tuple[str | None, BaseException | None]:
    """The constructor's own exception, and the target that raised it: Hydra names each target it was building in
    its chain of exceptions, the innermost one is the constructor that complained."""
    cause: BaseException | None = error
    target = None
    while isinstance(cause, InstantiationException):
        found = re.search(r"(?:call to target '|partial\()([^',]+)", str(cause))
        target = found.group(1) if found else target
        cause = cause.__cause__
    return target, cause


def raising_node(
    nodes: Iterable[tuple[str, DictConfig, bool]], target: str | None, default: tuple[str, DictConfig]
) -> tuple[str, DictConfig]:
    """The key and node of `nodes` (validation.target_nodes of the config built) that builds `target`; `default` (the
    config itself) if unclear."""
    matches = []
    for node_key, node, _ in nodes:
        try:
            located = locate(node._target_) if isinstance(node._target_, str) else node._target_
        except ImportError:
            continue
        located_name = f"{located.__module__}.{located.__qualname__}" if callable(located) else str(located)
        if target in (str(node._target_), located_name):
            matches.append((node_key, node))
    return matches[0] if len(matches) == 1 else default
