"""The library's own tests. Their task is hydralight.testing's regression, composed from its own config dir (a
project of its own), never an example of the template: this suite passes with no example package installed."""

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from hydralight.testing import compose

# Small and quick, on the CPU, quiet: what almost every test wants on top of the testing project's defaults.
QUICK = (
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "trainer.enable_progress_bar=false",  # else Lightning adds its own bar and summary back
    "trainer.enable_model_summary=false",
)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """make_cfg(*overrides, config_name="train", quick=True): a composed config writing into tmp_path/run."""

    def make(*overrides: str, config_name: str = "train", quick: bool = True) -> DictConfig:
        return compose(config_name, tmp_path / "run", (*(QUICK if quick else ()), *overrides))

    return make
