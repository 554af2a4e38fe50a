"""Run dirs on the path users take (default dirs, `run_name=`): the guard runs, one run per dir at a time, and a
run refused before it trains leaves what was on disk exactly as it was. The project is hydralight.testing's, its
train.py run from another dir as a user types `python <project>/train.py` there."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hydralight.core.errors import UserError
from hydralight.core.runs.guard import LOCK_FILE, RunLock, RunRecord, check_run_dir
from hydralight.testing import run_cli, write_project

QUIET = ("trainer.max_epochs=1", "~callbacks.progress_bar", "trainer.enable_progress_bar=false")


@pytest.fixture(scope="module")
def train_cli(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess]:
    """train_cli(cwd, *args): `python <project>/train.py <args>` as typed, started in `cwd`, with the default run
    dirs under `<cwd>/outputs`."""
    script = write_project(tmp_path_factory.mktemp("project")) / "train.py"
    return lambda cwd, *args: run_cli(str(script), *args, cwd=cwd)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory: pytest.TempPathFactory, train_cli) -> Path:
    """A finished `python train.py run_name=earlier` in a scratch cwd: the run users come back to."""
    cwd = tmp_path_factory.mktemp("cwd")
    result = train_cli(cwd, "run_name=earlier", *QUIET)
    assert result.returncode == 0, result.stderr[-4000:]
    return cwd


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("run_name=earlier", "model.net.hidden=16"), "was written by another model"),  # refused inside the task
        (("run_name=earlier", "resume=never"), "resume=never"),  # refused by the guard, before Hydra writes
    ],
    ids=["other-architecture", "resume-never"],
)
def test_a_refused_resume_leaves_the_earlier_run_byte_identical(train_cli, earlier_run, args, expected):
    run_dir = earlier_run / "outputs" / "train" / "runs" / "earlier"
    before = snapshot(run_dir)
    result = train_cli(earlier_run, *args, *QUIET)
    assert result.returncode == UserError.exit_code, result.stderr[-4000:]
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert "run_name='earlier'" in result.stderr or "runs/earlier" in result.stderr
    assert snapshot(run_dir) == before, "config.yaml, overrides.yaml, train.log, checkpoints: all as they were"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("trainer.max_epochs=abc",), "trainer.max_epochs='abc'"),  # validation, before anything is built
        (("resume=sometimes",), "resume='sometimes'"),  # the run dir's own check, once Hydra has made the dir
        (("model=stateful", "data=stateful", "data.batch_size=100000"), "larger than the training split"),  # setup
        (("monitor=val/accuracy",), "logs no metric of that name"),  # Lightning's sanity check
    ],
    ids=["validation", "run-dir-check", "data-setup", "sanity-check"],
)
def test_a_run_refused_before_training_leaves_no_new_run_dir(train_cli, tmp_path, args, says):
    """Refused at any point before the first training step: exit 2, its line, and no run dir left behind."""
    result = train_cli(tmp_path, *args)
    assert result.returncode == UserError.exit_code, result.stderr[-2000:]
    assert says in result.stderr
    runs = tmp_path / "outputs" / "train" / "runs"
    assert not runs.exists() or not list(runs.iterdir()), list(runs.iterdir())


@pytest.mark.parametrize("run_name", ["../../escaped", "a/../../b", "ABSOLUTE", "n" * 300])
def test_a_run_name_that_is_no_plain_name_is_one_line_and_writes_nothing(train_cli, tmp_path, run_name):
    """run_name names one dir under outputs/<task>/runs: a path or an over-long name stops before any dir is made,
    inside or outside the cwd."""
    cwd = tmp_path / "deep" / "cwd"
    cwd.mkdir(parents=True)
    run_name = run_name.replace("ABSOLUTE", str(tmp_path / "elsewhere"))
    result = train_cli(cwd, f"run_name={run_name}")
    assert result.returncode == UserError.exit_code, result.stderr[-2000:]
    assert result.stderr.strip().startswith("error: run_name=") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")) == ["deep", "deep/cwd"]


def test_an_unwritable_outputs_dir_is_one_line(train_cli, tmp_path):
    """`outputs` that cannot hold run dirs (here: a file; root ignores permission bits): one line, exit 2."""
    (tmp_path / "outputs").write_text("not a dir")
    for args in ((), ("-m", "seed=1,2")):
        result = train_cli(tmp_path, *args)
        assert result.returncode == UserError.exit_code, result.stderr[-4000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "paths.log_dir=" in lines[0] and "Traceback" not in result.stderr, lines


def test_a_second_run_in_the_same_dir_at_once_is_refused(train_cli, earlier_run):
    """A run holds its dir's lock while it runs: another `run_name=` run into that dir stops with a message naming
    the holder, before it writes anything, and the dir is left as it was."""
    run_dir = earlier_run / "outputs" / "train" / "runs" / "earlier"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
        before = snapshot(run_dir)
        result = train_cli(earlier_run, "run_name=earlier", *QUIET)
        assert result.returncode == UserError.exit_code, result.stderr[-4000:]
        assert "run_name='earlier' is in use by another run" in result.stderr and f"pid {holder.pid}" in result.stderr
        assert snapshot(run_dir) == before
    finally:
        holder.kill()
        (run_dir / LOCK_FILE).unlink(missing_ok=True)


def test_the_lock_of_a_dead_run_is_taken_over_and_a_live_one_refuses(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = RunLock(tmp_path, "run_name='x'")
    lock.path.write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename}))
    lock.acquire()  # a kill -9 left it: taken over
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    with pytest.raises(UserError, match=r"run_name='x' is in use by another run"):
        RunLock(tmp_path, "run_name='x'").acquire()  # alive (this very process)
    lock.release()
    assert not lock.path.exists()


def test_undo_restores_an_earlier_runs_records_and_removes_a_new_dir(tmp_path):
    earlier = tmp_path / "earlier"
    (earlier / ".hydra").mkdir(parents=True)
    (earlier / ".hydra" / "config.yaml").write_text("task_name: train\n")
    (earlier / "train.log").write_text("the earlier run's log\n")
    before = snapshot(earlier)
    record = RunRecord(earlier, RunLock(earlier, "x"))
    (earlier / ".hydra" / "config.yaml").write_text("task_name: train\nchanged: true\n")  # what Hydra does
    (earlier / ".hydra" / "overrides.yaml").write_text("- new\n")
    with (earlier / "train.log").open("a") as log:
        log.write("lines of the refused run\n")
    record.undo()
    assert snapshot(earlier) == before

    new = tmp_path / "new"
    new.mkdir()
    record = RunRecord(new, RunLock(new, "x"))
    (new / ".hydra").mkdir()
    (new / ".hydra" / "config.yaml").write_text("task_name: train\n")
    record.undo()
    assert not new.exists()


def test_a_dir_holding_a_users_files_is_refused_by_its_run_name(tmp_path):
    run_dir = tmp_path / "x"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"run_name='x' .* not a train run .* nothing there is touched"):
        check_run_dir(run_dir, "train", "auto", label="run_name='x'")


def test_the_guard_locks_the_run_dir_before_hydra_writes_and_a_refusal_unlocks_it(tmp_path):
    from omegaconf import OmegaConf

    from hydralight.core.runs.guard import RunDirGuard, undo_refused_run

    run_dir = tmp_path / "outputs" / "train" / "runs" / "x"
    config = OmegaConf.create({"hydra": {"run": {"dir": str(run_dir)}}, "task_name": "train", "run_name": "x"})
    RunDirGuard().on_run_start(config)
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
    undo_refused_run()  # what the CLI does on a UserError before training
    assert not run_dir.exists()
