"""The library's declared dependency ranges are the tested ones: each lower bound in lib/pyproject.toml is pinned in
lib/lower-bounds.txt, which CI installs for the library's suite, and nothing else is pinned there."""

import re
import sys
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1]

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")


def lower_bounds_declared() -> dict[str, str]:
    dependencies = tomllib.loads((LIB / "pyproject.toml").read_text())["project"]["dependencies"]
    found = {}
    for requirement in dependencies:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*).*", requirement)
        assert match, f"{requirement!r} has no lower bound: declare one, and pin it in lower-bounds.txt"
        found[match.group(1).lower()] = match.group(2)
    return found


def lower_bounds_pinned() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in (LIB / "lower-bounds.txt").read_text().splitlines()]
    return {name.lower(): version for name, version in (line.split("==") for line in lines if line)}


def test_every_lower_bound_is_the_version_ci_tests():
    declared, pinned = lower_bounds_declared(), lower_bounds_pinned()
    assert pinned.keys() == declared.keys()
    differ = {name: (declared[name], pinned[name]) for name in declared if not _same(declared[name], pinned[name])}
    assert not differ, f"declared lower bound vs pinned: {differ}"


def _same(bound: str, pin: str) -> bool:
    """`>=2.13` is pinned as `2.13.0`: the same version, trailing zeros aside."""
    parts = lambda version: [int(part) for part in version.split(".")]  # noqa: E731
    a, b = parts(bound), parts(pin)
    width = max(len(a), len(b))
    return a + [0] * (width - len(a)) == b + [0] * (width - len(b))
