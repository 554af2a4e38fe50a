"""A run's provenance: `<run dir>/provenance/<start time>/` holds packages.txt, environment.json and git.diff, written
by rank 0 at every start, a resumed run keeping the first start's; git never fails or holds up a run."""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import lightning
import pytest
import torch

import hydralight
from hydralight.core.runs import provenance
from hydralight.core.runs.provenance import CODE_DIR, write_provenance
from hydralight.core.train import train

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def starts(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "provenance").iterdir())


def environment(folder: Path) -> dict:
    return json.loads((folder / "environment.json").read_text())


def installed(packages: list[str], name: str) -> str:
    """The line of packages.txt that names distribution `name`."""
    (line,) = [line for line in packages if line.split("==")[0].lower() == name]
    return line


def test_a_training_run_records_what_it_was_made_of(make_cfg, tmp_path):
    """The library's own checkout is the code that ran (hydralight's source, wherever the command starts)."""
    train(make_cfg())
    [folder] = starts(tmp_path / "run")
    record = environment(folder)
    assert record["torch"] == torch.__version__
    assert record["torch_cuda"] == torch.version.cuda
    assert record["host"] == socket.gethostname()
    assert record["lightning"] == lightning.__version__
    assert shlex.split(record["command"]) == sys.orig_argv  # as this pytest process was started
    assert record["git"]["commit"] == git("rev-parse", "HEAD", cwd=CODE_DIR)
    assert CODE_DIR.is_relative_to(record["git"]["toplevel"])
    assert (folder / "git.diff").is_file()
    assert record["git"]["dirty"] == ((folder / "git.diff").stat().st_size > 0)
    packages = (folder / "packages.txt").read_text().splitlines()
    # As pip lists it: the version in the distribution's metadata, a local label (2.14.1+cu130) where the wheel's
    # metadata has one; torch.__version__ may carry a label the metadata lacks (PyPI's CUDA wheels), never the reverse.
    torch_version = installed(packages, "torch").partition("  # ")[0].removeprefix("torch==")
    assert torch_version == metadata.version("torch")
    assert torch.__version__.partition("+")[0] == torch_version.partition("+")[0]
    assert installed(packages, "lightning") == f"lightning=={lightning.__version__}"
    source = Path(hydralight.__file__).resolve().parents[2]  # lib/, where an editable install points
    editable = (source / "pyproject.toml").is_file()  # this suite run from a checkout; else an installed library
    suffix = f"  # editable install of {source}" if editable else ""
    assert installed(packages, "hydralight") == f"hydralight=={metadata.version('hydralight')}{suffix}"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A throwaway checkout: one commit of a text and a binary file, then changes that are not committed."""
    repo = tmp_path / "project"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / ".gitignore").write_text("ignored.txt\n")
    (repo / "model.py").write_text("width = 64\n")
    (repo / "weights.bin").write_bytes(bytes(range(256)))
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "first", cwd=repo)
    (repo / "model.py").write_text("width = 128\n")  # changed, not staged
    (repo / "weights.bin").write_bytes(bytes(reversed(range(256))))  # a binary change
    (repo / "staged.py").write_text("depth = 2\n")
    git("add", "staged.py", cwd=repo)  # added, not committed: part of the diff against HEAD
    (repo / "notes.txt").write_text("untracked\n")
    (repo / "ignored.txt").write_text("ignored\n")
    return repo


def test_git_diff_gives_back_the_tree_that_ran(repo, tmp_path):
    folder = write_provenance(tmp_path / "run", code_dir=repo)
    record = environment(folder)["git"]
    assert record["commit"] == git("rev-parse", "HEAD", cwd=repo)
    assert record["branch"] == "main"
    assert record["dirty"] is True
    assert record["untracked"] == ["notes.txt"]  # not the ignored file, not the staged one
    assert "+width = 128" in (folder / "git.diff").read_text(errors="replace")
    clone = tmp_path / "clone"
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    git("apply", str(folder / "git.diff"), cwd=clone)
    for name in ("model.py", "weights.bin", "staged.py"):
        assert (clone / name).read_bytes() == (repo / name).read_bytes(), name


def test_outside_git_without_git_or_with_a_hung_git_the_run_still_gets_its_record(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    folder = write_provenance(tmp_path / "outside", code_dir=plain)
    assert environment(folder)["git"]["checkout"] is False
    assert "not a git repository" in environment(folder)["git"]["reason"]
    assert not (folder / "git.diff").exists()
    assert (folder / "packages.txt").is_file()

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no git at all
    folder = write_provenance(tmp_path / "no-git", code_dir=CODE_DIR)
    no_git = {"checkout": False, "code_dir": str(CODE_DIR), "reason": "git is not installed"}
    assert environment(folder)["git"] == no_git

    (bin_dir / "git").write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")  # a git that hangs
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setattr(provenance, "GIT_TIMEOUT_S", 0.5)
    folder = write_provenance(tmp_path / "hung-git", code_dir=CODE_DIR)
    assert "git took more than 0.5 s" in environment(folder)["git"]["error"]
    assert not (folder / "git.diff").exists()


def test_a_resumed_run_keeps_its_first_starts_provenance(repo, tmp_path):
    """Every start (train() calls it once per start, the test above) gets its own folder, even within one second."""
    write_provenance(tmp_path / "run", code_dir=repo)
    [first] = starts(tmp_path / "run")
    written = {path.name: path.read_bytes() for path in first.iterdir()}
    (repo / "model.py").write_text("width = 256\n")  # changed again before the resumed start
    write_provenance(tmp_path / "run", code_dir=repo)  # the resumed start, in the same run dir
    assert len(starts(tmp_path / "run")) == 2
    assert starts(tmp_path / "run")[0] == first
    assert {path.name: path.read_bytes() for path in first.iterdir()} == written


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning's DDP launcher sets in the processes it starts
    assert write_provenance(tmp_path / "run", code_dir=tmp_path) is None
    assert not (tmp_path / "run").exists()


def test_gpus_and_their_driver_come_from_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    folder = write_provenance(tmp_path / "no-smi", code_dir=tmp_path)  # a GPU, but no nvidia-smi: noted, no failure
    assert environment(folder)["gpus"] is None
    assert "nvidia-smi" in environment(folder)["nvidia_smi_error"]

    listing = "0, NVIDIA H200, 143771 MiB, 570.86.15\n1, NVIDIA H200, 143771 MiB, 570.86.15\n"
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\nprintf '{listing}'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    record = environment(write_provenance(tmp_path / "smi", code_dir=tmp_path))
    assert record["gpu_count"] == 2
    assert [gpu["name"] for gpu in record["gpus"]] == ["NVIDIA H200", "NVIDIA H200"]
    assert record["gpu_driver"] == "570.86.15"
