"""Shared fixtures: the real configs composed with Hydra's compose API, and the real CLI run as a subprocess."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from hydralight.core import cli
from tests import warm

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
    return cli.compose_config(config_name, output_dir, overrides, root_dir=ROOT, conf=CONFIG_DIR)


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
    """Run `python <script> <args>` in `cwd` (the repo root) as a user would; stdout and stderr captured as text.
    A fork of the warm test interpreter where it can be (tests/warm.py), else a fresh `python`."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return warm.run([sys.executable, script, *args], cwd, env, timeout)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    """A failed child shows its own stderr, not just an exit code."""
    assert result.returncode == 0, f"exit {result.returncode}\n--- stderr ---\n{result.stderr[-6000:]}"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker and every process it starts get their share of the cores as torch threads.
    torch's default of one thread per core in every process oversubscribes the cores as soon as two workers train at
    once, and its spinning threads then make the whole suite slower by a third or more. An OMP_NUM_THREADS you set
    yourself is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))
        torch.set_num_threads(int(threads))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The modules with a slow test first, each whole and in its order: pytest-xdist hands a worker a module (or a
    class) at a time in this order (`--no-loadscope-reorder`), and the quick ones then fill the end evenly, where a
    long module handed out last would leave the other workers idle until it ends. Then: `gpu` tests skip without
    CUDA."""
    with_slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in with_slow)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def prepare_dataset(out: Path, *overrides: str) -> Path:
    """`python prepare.py out=<out> <overrides>`, in-process: an on-disk dataset for data=ondisk."""
    from hydralight.core.prepare import prepare

    prepare(compose_config("prepare", out.parent / "prepare-run", (f"out={out}", *overrides)))
    return out


@pytest.fixture(scope="session")
def prepared_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded digits prepared on disk (`python prepare.py`), shared by the tests that only read it."""
    pytest.importorskip("datasets", reason="the ondisk extra: pip install -e '.[ondisk]'")
    return prepare_dataset(tmp_path_factory.mktemp("prepared") / "digits")


# copier:if gpt_example
@pytest.fixture(scope="session")
def prepared_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Shakespeare prepared on disk (`python prepare.py source=text`)."""
    pytest.importorskip("datasets", reason="the ondisk extra: pip install -e '.[ondisk]'")
    return prepare_dataset(tmp_path_factory.mktemp("prepared") / "text", "source=text")


# copier:endif
