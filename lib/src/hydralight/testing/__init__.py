"""Task-agnostic fixtures for testing the machinery, and a project's own tests: a tiny regression task (a module whose
network is a config, a data module), a config dir of its own that trains it (`CONFIG_DIR`, composed by `compose`),
and the module contract any LightningModule can run (`hydralight.testing.contract`, needs pytest), that project written
to a dir with its entry scripts and its CLI run there (`write_project`, `run_cli`; hydralight.testing.warm forks
the runs from a warm interpreter)."""

from pathlib import Path
from typing import TYPE_CHECKING

from hydralight.testing.project import CONFIG_DIR, QUICK, assert_ok, run_cli, write_project
from hydralight.testing.tasks import NetRegression, RegressionData, TinyNet

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = [
    "CONFIG_DIR",
    "QUICK",
    "NetRegression",
    "RegressionData",
    "TinyNet",
    "assert_ok",
    "compose",
    "run_cli",
    "write_project",
]


def compose(config_name: str, output_dir: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> "DictConfig":
    """The config `python <config_name>.py <overrides>` gets in the testing project, writing into `output_dir`."""
    from hydralight.core.cli import compose_config

    return compose_config(config_name, output_dir, overrides, root_dir=Path(output_dir).parent, conf=CONFIG_DIR)
