"""The library's own tests. Their task is hydralight.testing's regression, composed from its own config dir (a
project of its own), never an example of the template: this suite passes with no example package installed."""

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from hydralight.testing import QUICK, compose, write_project


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """make_cfg(*overrides, config_name="train", quick=True): a composed config writing into tmp_path/run."""

    def make(*overrides: str, config_name: str = "train", quick: bool = True) -> DictConfig:
        return compose(config_name, tmp_path / "run", (*(QUICK if quick else ()), *overrides))

    return make


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The testing project written into a fresh dir (conf/, train.py, eval.py, ...): `run_cli("train.py", ...,
    cwd=project)` is `python train.py ...` typed in it."""
    return write_project(tmp_path / "project")
