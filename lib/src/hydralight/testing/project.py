"""The testing project as a user has it on disk: its `conf/` and the five entry scripts in one dir, and the CLI run
there as a user types it. What the machinery's tests run `python train.py ...` in, instead of an example."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "conf"  # the testing project's configs: its tasks, train/eval/predict/export

ENTRY_SCRIPTS = {"train": "train_main", "eval": "eval_main", "predict": "predict_main", "export": "export_main",
                 "prepare": "prepare_main"}  # fmt: skip

# Small and quick, on the CPU, quiet: what almost every test wants on top of the testing project's defaults.
QUICK = (
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "trainer.enable_progress_bar=false",  # else Lightning adds its own bar and summary back
    "trainer.enable_model_summary=false",
)


def write_project(directory: str | Path) -> Path:
    """A project in `directory`: the testing project's `conf/` and `train.py`, `eval.py`, ... as a template copy has
    them. Returns the directory."""
    directory = Path(directory)
    shutil.copytree(CONFIG_DIR, directory / "conf", dirs_exist_ok=True)
    for script, main in ENTRY_SCRIPTS.items():
        (directory / f"{script}.py").write_text(
            f"from hydralight.core.cli import {main}\n\nif __name__ == '__main__':\n    {main}()\n"
        )
    return directory


def run_cli(
    script: str, *args: str, cwd: str | Path, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python <script> <args>` in `cwd`, as a user would type it; stdout and stderr captured as text. A fork of the
    warm test interpreter where it can be (hydralight.testing.warm), else a fresh `python`."""
    from hydralight.testing.warm import run

    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return run([sys.executable, script, *args], cwd, env, timeout)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    """A failed child shows its own stderr, not just an exit code."""
    assert result.returncode == 0, f"exit {result.returncode}\n--- stderr ---\n{result.stderr[-6000:]}"
