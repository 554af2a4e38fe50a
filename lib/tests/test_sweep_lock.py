"""A sweep dir is locked like a run dir: a second sweep into the dir of one still running is refused in one line
(exit 2) and changes nothing there; the lock of a sweep that died is taken over."""

import json
import os
import socket
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from hydralight.core.runs.guard import LOCK_FILE, RunDirGuard


def sweep_config(sweep_dir):
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}, "task_name": "train"})


def lock_of(pid: int) -> str:
    return json.dumps({"pid": pid, "host": socket.gethostname(), "slurm_job": None, "slurm_restart": "0"})


def test_a_second_sweep_into_a_running_sweeps_dir_is_refused(tmp_path, capsys):
    sweep_dir = tmp_path / "multiruns" / "shared"
    sweep_dir.mkdir(parents=True)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (sweep_dir / LOCK_FILE).write_text(lock_of(running.pid))
        before = sorted(path.name for path in sweep_dir.iterdir())
        with pytest.raises(SystemExit) as stop:
            RunDirGuard().on_multirun_start(sweep_config(sweep_dir))
        assert stop.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: hydra.sweep.dir={str(sweep_dir)!r} is in use by another run (pid {running.pid}")
        assert "give this sweep another hydra.sweep.dir" in line
        assert sorted(path.name for path in sweep_dir.iterdir()) == before
        assert json.loads((sweep_dir / LOCK_FILE).read_text())["pid"] == running.pid
    finally:
        running.kill()
        running.wait()


def test_a_sweep_takes_over_the_lock_of_one_that_died(tmp_path):
    sweep_dir = tmp_path / "multiruns" / "after-a-kill"
    sweep_dir.mkdir(parents=True)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    (sweep_dir / LOCK_FILE).write_text(lock_of(ended.pid))
    RunDirGuard().on_multirun_start(sweep_config(sweep_dir))
    assert json.loads((sweep_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
    (sweep_dir / LOCK_FILE).unlink()  # as this process's exit would


def test_a_new_sweep_dir_is_made_and_locked_before_the_first_job(tmp_path):
    """A sweep into a dir that does not exist yet (every new sweep: Hydra makes it only when the first job starts):
    the dir is made and locked by this process at once, so a second sweep started meanwhile is refused."""
    sweep_dir = tmp_path / "multiruns" / "new"
    RunDirGuard().on_multirun_start(sweep_config(sweep_dir))
    assert json.loads((sweep_dir / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_search_without_the_sweeps_extra_is_one_line_and_leaves_no_sweep_dir(tmp_path, capsys, monkeypatch):
    """hparams_search=... with optuna not installed: one line naming the extra, exit 2; the sweep dir made for the
    lock is gone again at exit."""
    import atexit
    import importlib.util

    from hydra_plugins.hydralight_optuna import OptunaSweeper

    registered = []
    monkeypatch.setattr(atexit, "register", lambda function, *args: registered.append((function, args)))
    sweep_dir = tmp_path / "multiruns" / "refused"
    RunDirGuard().on_multirun_start(sweep_config(sweep_dir))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real_find_spec(name, *a)
    )
    with pytest.raises(SystemExit) as stopped:
        OptunaSweeper().sweep([])
    assert stopped.value.code == 2
    assert "needs the sweeps extra" in capsys.readouterr().err
    for function, args in reversed(registered):  # what the process does at exit: release the lock, then the dir
        function(*args)
    assert not sweep_dir.exists()
