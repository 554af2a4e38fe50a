"""Task-agnostic fixtures for testing the machinery, and a project's own tests: a tiny regression task (a module whose
network is a config, a data module), a config dir of its own that trains it (`CONFIG_DIR`, composed by `compose`),
and the module contract any LightningModule can run (`hydralight.testing.contract`, needs pytest), that project written
to a dir with its entry scripts and its CLI run there (`write_project`, `run_cli`; hydralight.testing.warm forks
the runs from a warm interpreter)."""

from collections.abc import Sequence
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
    "compose_config",
    "run_cli",
    "write_project",
]


def compose_config(
    config_name: str,
    output_dir: str | Path,
    overrides: Sequence[str] = (),
    root_dir: str | Path | None = None,
    conf: str | Path | None = None,
) -> "DictConfig":
    """The config `python <config_name>.py <overrides>` gets, outside Hydra's runtime (tests, benchmarks, notebooks):
    what the runtime would fill in is set here, the run writing into `output_dir`, started in `root_dir` (cwd), its
    project's configs in `conf` (default: `cli.config_dir()`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from hydralight.core.cli import config_dir
    from hydralight.core.resolvers import register_resolvers
    from hydralight.core.trust import remember_config_sources

    register_resolvers()
    with initialize_config_dir(config_dir=str(conf or config_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=True)
    remember_config_sources(cfg.hydra.runtime.config_sources)  # what the runtime would keep in HydraConfig
    with open_dict(cfg):
        del cfg.hydra
        cfg.paths.root_dir = str(root_dir or Path.cwd())
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(Path(output_dir).parent)
    return cfg


def compose(config_name: str, output_dir: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> "DictConfig":
    """The config `python <config_name>.py <overrides>` gets in the testing project, writing into `output_dir`."""
    return compose_config(config_name, output_dir, overrides, root_dir=Path(output_dir).parent, conf=CONFIG_DIR)
