"""`.venv/bin/python`, the committed launcher: `.venv/bin/python train.py ...` runs in a fresh clone. Its first use
makes the venv and installs the project through `.ci/install` (here a stand-in that skips pip: the real install is
what `bash .ci/run` does in CI); after that, and in a venv the README's quickstart made, it only runs python3."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

LAUNCHER = ROOT / ".venv" / "bin" / "python"
# Stands in for .ci/install: makes the venv (no pip, so no network and no minutes) and records each call.
FAKE_INSTALL = f"""#!/usr/bin/env bash
set -euo pipefail
echo "$2" >> "$(dirname "$0")/installs"
[ -f "$1/pyvenv.cfg" ] || {sys.executable} -m venv --without-pip "$1"
[ ! -e "$(dirname "$0")/fail" ]
"""


def clone_with_launcher(root: Path, install: str | None = FAKE_INSTALL) -> Path:
    """A project dir holding what a fresh clone has of the venv (the launcher), and a .ci/install."""
    (root / ".venv" / "bin").mkdir(parents=True)
    shutil.copy2(LAUNCHER, root / ".venv" / "bin" / "python")
    if install is not None:
        (root / ".ci").mkdir()
        (root / ".ci" / "install").write_text(install)
    return root / ".venv" / "bin" / "python"


def run(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=120)


def test_git_tracks_the_launcher_and_nothing_else_of_the_venv():
    tracked = subprocess.run(["git", "ls-files", ".venv"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert tracked.stdout.split() == [".venv/bin/python"]
    ignored = subprocess.run(["git", "check-ignore", ".venv/bin/python3", ".venv/pyvenv.cfg", ".venv/lib"], cwd=ROOT,
                             capture_output=True, text=True)  # fmt: skip
    assert ignored.stdout.split() == [".venv/bin/python3", ".venv/pyvenv.cfg", ".venv/lib"]


def test_first_use_installs_once_then_runs_the_venvs_python(tmp_path):
    python = clone_with_launcher(tmp_path)
    first = run(python, "-c", "import sys; print(sys.prefix); sys.exit(3)")
    assert first.returncode == 3, first.stderr
    assert first.stdout.strip() == str(tmp_path / ".venv")
    assert "First use of .venv/bin/python here" in first.stderr
    again = run(python, "-c", "print('again')")
    assert again.stdout == "again\n" and "First use" not in again.stderr
    assert (tmp_path / ".ci" / "installs").read_text() == "dev\n"  # once, with the quickstart's extra


def test_an_install_that_failed_is_tried_again_and_its_exit_code_kept(tmp_path):
    python = clone_with_launcher(tmp_path)
    (tmp_path / ".ci" / "fail").touch()
    failed = run(python, "-c", "print('ran')")
    assert failed.returncode != 0 and "ran" not in failed.stdout
    (tmp_path / ".ci" / "fail").unlink()
    assert run(python, "-c", "print('ran')").stdout == "ran\n"
    assert (tmp_path / ".ci" / "installs").read_text() == "dev\ndev\n"


def test_the_quickstarts_venv_keeps_the_launcher_which_runs_its_python(tmp_path):
    """`python3 -m venv .venv` over a fresh clone: the launcher stays, and installs nothing (the user does)."""
    python = clone_with_launcher(tmp_path, install=None)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True)
    assert python.read_bytes() == LAUNCHER.read_bytes()
    result = run(python, "-c", "import sys; print(sys.prefix)")
    assert result.returncode == 0 and result.stdout.strip() == str(tmp_path / ".venv")
    assert "First use" not in result.stderr
