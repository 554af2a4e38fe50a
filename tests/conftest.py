"""Shared fixtures: the real configs composed with Hydra's compose API, and the real CLI run as a subprocess."""

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from hydralight import testing
from hydralight.testing import assert_ok  # noqa: F401 (the project tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "conf")  # the project's own groups
LIBRARY_CONFIG_DIR = str(ROOT / "lib" / "src" / "hydralight" / "conf")  # the library's, on Hydra's search path

# Small, quick and CPU-only: what almost every test wants on top of the real defaults.
TINY = (
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "trainer.enable_progress_bar=false",  # else Lightning adds its own bar and summary back
    "trainer.enable_model_summary=false",
)


def compose_config(config_name: str, output_dir: Path, overrides: tuple[str, ...] | list[str] = ()) -> DictConfig:
    """The config a user gets from `python <config_name>.py <overrides>` in the repo root, writing into `output_dir`."""
    return testing.compose_config(config_name, output_dir, overrides, root_dir=ROOT, conf=CONFIG_DIR)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """make_cfg(*overrides, config_name="train", tiny=True): a composed config writing into tmp_path/run."""

    def make(*overrides: str, config_name: str = "train", tiny: bool = True) -> DictConfig:
        return compose_config(config_name, tmp_path / "run", (*(TINY if tiny else ()), *overrides))

    return make


def working_tree_files() -> list[str]:
    """The files of this checkout that git would commit, tracked or not: what a fresh clone would hold."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in listed.stdout.split("\0") if name and (ROOT / name).is_file()]


def run_cli(
    script: str, *args: str, timeout: float = 300, env: dict | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """`python <script> <args>` in `cwd` (the repo root) as a user would type it (hydralight.testing.run_cli)."""
    return testing.run_cli(script, *args, cwd=cwd, timeout=timeout, env=env)


def prepare_dataset(out: Path, *overrides: str) -> Path:
    """`python prepare.py out=<out> <overrides>`, in-process: an on-disk dataset for data=ondisk."""
    from hydralight.core.prepare import prepare

    prepare(compose_config("prepare", out.parent / "prepare-run", (f"out={out}", *overrides)))
    return out
