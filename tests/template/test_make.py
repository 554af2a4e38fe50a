"""The README's quickstart is two commands, `make train` and `make test`: the first use makes the venv and installs the
library and the project (.ci/install), and only then trains or tests; later uses only train or test. What each runs
is read from make's dry run (`make -n`) in a scratch copy of the Makefile, so nothing here installs anything: CI's
.ci/run runs the two commands for real in a fresh clone."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Makefile and the two pyproject.toml files it depends on, in a scratch dir with no venv yet."""
    for name in ("Makefile", "pyproject.toml", "lib/pyproject.toml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


# What a make that runs this suite (`make test`) or CI (`TORCH=...`) hands its children; a user's shell has none of it.
INHERITED = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "TORCH", "EXTRAS", "VENV", "ARGS")


def dry_run(project: Path, *args: str) -> list[str]:
    env = {key: value for key, value in os.environ.items() if key not in INHERITED}
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", *args], cwd=project, capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    return [line.strip() for line in result.stdout.strip().splitlines()]


def installed(project: Path) -> None:
    """What .ci/install leaves when it has finished: the venv's stamp, newer than both pyproject.toml files."""
    stamp = project / ".venv" / ".installed"
    stamp.parent.mkdir()
    stamp.touch()
    later = max(os.stat(project / name).st_mtime for name in ("pyproject.toml", "lib/pyproject.toml")) + 10
    os.utime(stamp, (later, later))


def test_the_first_make_train_installs_then_trains_and_the_next_only_trains(project):
    assert dry_run(project, "train", "ARGS=model/net=cnn") == [
        'TORCH="" bash .ci/install .venv "dev"',
        ".venv/bin/python train.py model/net=cnn",
    ]
    installed(project)
    assert dry_run(project, "train") == [".venv/bin/python train.py"]
    assert dry_run(project, "test") == [".venv/bin/python -m pytest"]


def test_a_changed_pyproject_installs_again(project):
    installed(project)
    later = os.stat(project / ".venv" / ".installed").st_mtime + 10
    os.utime(project / "lib" / "pyproject.toml", (later, later))  # a new version of the library, say
    assert dry_run(project, "test")[0] == 'TORCH="" bash .ci/install .venv "dev"'


def test_torch_is_installed_first_when_given(project):
    assert dry_run(project, "train", "TORCH=torch==2.13.0")[0] == 'TORCH="torch==2.13.0" bash .ci/install .venv "dev"'


def test_the_install_installs_torch_then_the_library_then_the_project_and_marks_the_venv_last():
    """.ci/install: the order that lets a given torch satisfy the library's requirement, and a stamp only at the end
    (an install that stopped midway installs again at the next `make train`)."""
    lines = [line.strip() for line in (ROOT / ".ci" / "install").read_text().splitlines()]
    steps = [line for line in lines if line.startswith(('"$python" -m pip install', 'touch "$venv/.installed"'))]
    assert steps == [
        '"$python" -m pip install -q --upgrade pip',
        '"$python" -m pip install -q $TORCH',
        '"$python" -m pip install -q "${library[@]}" -e ".[$extras]"',
        'touch "$venv/.installed"',
    ]
    # The library: lib/ here (editable), HYDRALIGHT where set (a copy's default is rendered by copier).
    assert 'if [ -n "${HYDRALIGHT:-}" ]; then library=("$HYDRALIGHT"); else library=(-e ./lib); fi' in lines
    assert lines.index('rm -f "$venv/.installed"') < lines.index(steps[0])
