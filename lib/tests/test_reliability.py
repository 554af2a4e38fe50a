"""Runs that survive: kill and resume bitwise, preemption, the NaN guard, and a catalogue of bad inputs that each
stop with one clear line while every earlier run on disk stays as it was. The task is hydralight.testing's: its
regression, or its stateful task where a resume must restore dropout, Adam's moments and loader workers."""

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest
import torch
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from test_cli_errors import assert_user_error, snapshot

from hydralight.core import cli
from hydralight.core.errors import DiskFull, Interrupted, TrainingDiverged, UserError
from hydralight.core.train import train
from hydralight.testing import QUICK, assert_ok, compose, run_cli, warm, write_project

QUIET = (
    "logger=none",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
)
STATEFUL = ("model=stateful", "data=stateful")  # dropout, Adam, InMemoryDataModule's shuffled loaders: 20 steps/epoch
# Shuffling, dropout, Adam, two loader workers, deterministic kernels.
RESUMABLE = (*QUIET, *STATEFUL, "trainer.max_epochs=5", "data.num_workers=2", "trainer.deterministic=true",
             "test=false")  # fmt: skip
STEPS_PER_EPOCH = 2  # the regression's: 32 training samples in batches of 16


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_identical_training_state(a: Path, b: Path) -> None:
    """Every weight, buffer and optimizer state tensor equal (torch.equal), and the same step."""
    first, second = load_state(a), load_state(b)
    assert first["global_step"] == second["global_step"]
    assert first["state_dict"].keys() == second["state_dict"].keys()
    diffs = {
        key: (first["state_dict"][key].double() - second["state_dict"][key].double()).abs().max().item()
        for key in first["state_dict"]
        if not torch.equal(first["state_dict"][key], second["state_dict"][key])
    }
    assert not diffs, f"max |diff| per tensor: {diffs}"
    for left, right in zip(first["optimizer_states"], second["optimizer_states"], strict=True):
        for index, state in left["state"].items():
            for name, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(right["state"][index][name])), name


def start_training(
    run_dir: Path, *args: str, cold: bool = False, project: Path | None = None
) -> warm.WarmChild | subprocess.Popen:
    """`python train.py <args> hydra.run.dir=<run_dir>` in `project` (hydralight.testing's, written beside
    `run_dir` if not given), in a session of its own (a kill of its process group takes its loader workers and DDP
    ranks with it); `stderr_of` reads what it printed. A fork of the warm test interpreter, unless `cold`: kill -9 of
    a fresh `python` is proven once, in kill_mid_training."""
    if project is None:
        project = run_dir.parent / "project"
        if not project.exists():
            write_project(project)
    env = {**os.environ, **({warm.COLD: "1"} if cold else {})}
    stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (read by stderr_of, closed with the process object)
    with open(os.devnull, "w") as stdout:
        argv = [sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"]
        process = warm.popen(argv, project, env, stdout, stderr)
    process.stderr_file = stderr
    return process


def stderr_of(process: warm.WarmChild | subprocess.Popen) -> str:
    """What a run started by start_training has printed to stderr so far."""
    process.stderr_file.seek(0)
    return process.stderr_file.read()


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"training ended (exit {process.returncode}) before {path} appeared:\n{stderr_of(process)}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def kill_mid_training(run_dir: Path, total_steps: int, project: Path) -> int:
    """SIGKILL a run at a random moment after its first checkpoint; return the step its last.ckpt holds. A kill that
    lands after the last training step (a fast machine) tests nothing, so it is tried again with a shorter delay."""
    delay = random.uniform(0.0, 1.0)
    for _ in range(4):
        shutil.rmtree(run_dir, ignore_errors=True)
        process = start_training(run_dir, *RESUMABLE, cold=True, project=project)
        wait_for(run_dir / "checkpoints" / "last.ckpt", process)
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        killed_at = load_state(run_dir / "checkpoints" / "last.ckpt")["global_step"]
        if process.returncode == -signal.SIGKILL and killed_at < total_steps:
            return killed_at
        delay /= 4
    pytest.fail(f"every kill landed after the last training step (last delay {delay:.3f} s)")


@pytest.fixture
def other_filesystem(tmp_path):
    """A dir on a tmpfs (/dev/shm) when this machine has one: another filesystem than $TMPDIR, where a save that
    went through $TMPDIR would copy into the final name (issue 26, item 2); else a dir under tmp_path."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path / "other"
        return
    directory = Path(tempfile.mkdtemp(prefix="hydralight-test-", dir=shm))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
def test_killed_run_resumed_with_the_same_command_ends_bitwise_equal(project, tmp_path, other_filesystem):
    """SIGKILL at a random moment after the first checkpoint, re-run the same command: the final weights and
    optimizer state equal an uninterrupted run's exactly (shuffle, dropout, Adam, 2 loader workers). The killed run
    writes on a tmpfs where there is one, so its checkpoints' atomicity does not rest on sharing $TMPDIR's disk."""
    assert_ok(run_cli("train.py", *RESUMABLE, f"hydra.run.dir={tmp_path / 'uninterrupted'}", cwd=project))
    total_steps = load_state(tmp_path / "uninterrupted" / "checkpoints" / "last.ckpt")["global_step"]

    resumed = other_filesystem / "resumed"
    killed_at = kill_mid_training(resumed, total_steps, project)
    for checkpoint in (resumed / "checkpoints").glob("*.ckpt"):  # each whole: none torn by the kill
        load_state(checkpoint)

    result = run_cli("train.py", *RESUMABLE, f"hydra.run.dir={resumed}", cwd=project)
    assert_ok(result)
    assert "Resuming from" in result.stderr + result.stdout
    final = load_state(resumed / "checkpoints" / "last.ckpt")["global_step"]
    assert final > killed_at, "the second run did not train any further"
    assert_identical_training_state(tmp_path / "uninterrupted" / "checkpoints" / "last.ckpt",
                                    resumed / "checkpoints" / "last.ckpt")  # fmt: skip


def test_resume_picks_the_newest_loadable_checkpoint_and_skips_a_corrupt_one(make_cfg, caplog):
    """resume=auto continues from the checkpoint with the most steps; a truncated newer file is skipped, warned."""
    cfg = make_cfg("trainer.max_epochs=1", "test=false")
    train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    (checkpoints / "zzz-newer.ckpt").write_bytes((checkpoints / "last.ckpt").read_bytes()[:1000])
    cfg.trainer.max_epochs = 2
    train(cfg)
    assert any("Skipping" in message and "zzz-newer.ckpt" in message for message in caplog.messages)
    assert load_state(checkpoints / "last.ckpt")["epoch"] == 1  # continued from epoch 0, did not start over


def test_last_ckpt_is_the_final_epoch_not_the_best_and_resume_continues_from_it(make_cfg, caplog):
    """checkpoints/last.ckpt is written after every epoch (Lightning 2.6's save_last only writes it when the best
    improves), so a run whose last epoch was not its best continues from the last one, not the best one."""
    # "Best" is the highest val/loss here: the loss falls, so the best epoch is an early one.
    cfg = make_cfg("trainer.max_epochs=6", "mode=max", "test=false")
    train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    (best,) = [path for path in checkpoints.glob("*.ckpt") if path.name != "last.ckpt"]
    assert load_state(best)["epoch"] < 5, "precondition: the last epoch is not the best one"
    last = load_state(checkpoints / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (5, 6 * STEPS_PER_EPOCH)

    cfg.trainer.max_epochs = 7
    caplog.set_level("INFO", logger="hydralight")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    # Continuing is what the dir is for: no "Checkpoint directory ... is not empty" warning from Lightning.
    assert not [w for w in caught if "is not empty" in str(w.message)]
    assert any(f"Resuming from {checkpoints / 'last.ckpt'}" in message for message in caplog.messages)
    assert load_state(checkpoints / "last.ckpt")["global_step"] == 7 * STEPS_PER_EPOCH


def test_resume_never_starts_fresh_only_in_an_empty_dir(make_cfg):
    """resume=never refuses a run dir that already holds checkpoints instead of overwriting them."""
    from hydralight.core.runs.guard import check_run_dir

    cfg = make_cfg("test=false")
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text("task_name: train\n")
    check_run_dir(run_dir, "train", "auto")
    with pytest.raises(UserError, match="resume=never"):
        check_run_dir(run_dir, "train", "never")


@pytest.mark.slow
def test_ctrl_c_exits_130_saying_how_to_continue_and_that_command_continues(project):
    """SIGINT (Ctrl-C) mid-training, as typed with run_name= in a fresh dir: exit 130 (not Lightning's 1, which the
    README keeps for bugs) with one line naming the checkpoint, and the command it gives continues the run."""
    command = [sys.executable, "train.py", "run_name=ctrl-c", *QUIET, *STATEFUL, "trainer.max_epochs=20"]
    last = project / "outputs" / "train" / "runs" / "ctrl-c" / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        command, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    wait_for(last, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == Interrupted.exit_code == 130, stderr[-4000:]
    assert "Traceback" not in stderr
    assert "interrupted: stopped by Ctrl-C at step " in stderr
    assert f"Re-run the same command to continue from {last} (resume=auto)." in stderr.splitlines()[-1]
    stopped_at = load_state(last)["global_step"]

    result = warm.run(command, project, dict(os.environ), timeout=300)  # the signal above needed a fresh `python`
    assert_ok(result)
    assert f"Resuming from {last}" in result.stderr + result.stdout
    assert load_state(last)["global_step"] > stopped_at


def test_nan_stops_the_run_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    """A NaN loss at step 3 (epoch 1) stops the run (exit 3) with the step and the last good checkpoint, which loads
    finite. (The CLI prints a RunStopped as its one line and exit code: test_cli_errors and the Ctrl-C test above.)"""
    run_dir = tmp_path / "run"
    cfg = compose("train", run_dir, (
        *QUIET, "trainer.max_epochs=3",
        "+callbacks.inject_nan._target_=hydralight.testing.faults.InjectNaN", "+callbacks.inject_nan.at_step=3",
    ))  # fmt: skip
    with pytest.raises(TrainingDiverged) as stopped:
        train(cfg)
    assert stopped.value.exit_code == 3
    last_good = run_dir / "checkpoints" / "last.ckpt"
    assert "not finite at step 3" in str(stopped.value)
    assert f"Last good checkpoint: {last_good}" in str(stopped.value)
    weights = load_state(last_good)["state_dict"]
    assert all(torch.isfinite(tensor).all() for tensor in weights.values() if tensor.is_floating_point())


def test_gradient_norm_logging_is_a_switch(make_cfg):
    """callbacks.gradient_guard.log_norm=true logs train/grad_norm."""
    cfg = make_cfg("callbacks.gradient_guard.log_norm=true", "test=false")
    train(cfg)
    assert "train/grad_norm" in (Path(cfg.paths.output_dir) / "metrics.json").read_text()


def disk_fills_after(monkeypatch: pytest.MonkeyPatch, saves: int) -> None:
    """torch.save, from its (`saves` + 1)-th call on, fails as a full disk does (ENOSPC)."""
    real_save, calls = torch.save, []

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) > saves:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)


def test_disk_full_while_saving_is_a_clear_error_and_keeps_earlier_checkpoints(make_cfg, monkeypatch):
    """ENOSPC while a checkpoint is written: DiskFull (exit 74) saying so; the checkpoints already on disk load
    intact."""
    cfg = make_cfg("trainer.max_epochs=2", "test=false")
    disk_fills_after(monkeypatch, saves=2)  # epoch 0's best and last.ckpt go through; epoch 1's do not
    with pytest.raises(DiskFull, match="disk is full") as stopped:
        train(cfg)
    assert stopped.value.exit_code == 74
    monkeypatch.undo()
    assert load_state(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")["epoch"] == 0


# ---- The catalogue of bad inputs (more in test_cli_errors.py). Each: exit code, message, earlier run intact.


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """A finished run of the regression and one of another net (a dropout between its layers), made once; every
    catalogue entry must leave them untouched."""
    root = tmp_path_factory.mktemp("earlier")
    for name, extra in (("regression", ()), ("other", ("model.net._target_=hydralight.testing.stateful.DropoutNet",))):
        cfg = compose("train", root / name, (*QUICK, *extra))
        (root / name / ".hydra").mkdir(parents=True)
        OmegaConf.save(cfg, root / name / ".hydra" / "config.yaml")  # what Hydra writes into every run dir
        train(cfg)
    return root


CATALOGUE = {
    "devices-more-than-available": (["trainer.accelerator=cpu", "trainer.devices=512"], 2, ["trainer.devices=512"]),
    "ckpt-from-another-model": (["ckpt_path={earlier}/other/checkpoints/last.ckpt"], 2, ["another model", "missing"]),
    "corrupt-checkpoint": (["ckpt_path={tmp}/truncated.ckpt"], 2, ["truncated.ckpt", "not"]),
    "empty-split": (["data=stateful", "data.val_fraction=0"], 2, ["val split", "empty"]),
    "batch-larger-than-dataset": (["data=stateful", "data.batch_size=5000"], 2, ["data.batch_size=5000", "larger"]),
    "resume-into-a-foreign-dir": (["hydra.run.dir={tmp}/foreign"], 2, ["hydra.run.dir", "not a train run"]),
    "read-only-output-dir": (["hydra.run.dir=/proc/hydralight-run"], 2, ["hydra.run.dir", "cannot be written"]),
    "resume-never-onto-checkpoints": (["resume=never", "hydra.run.dir={earlier}/regression"], 2, ["resume=never"]),
    "resume-unknown-mode": (["resume=sometimes"], 2, ["resume='sometimes'", "auto", "never"]),
    "group-option-typo": (["data=regresion"], None, ["data", "regresion", "regression"]),
}


# The entries about the run dir itself: the guard is a Hydra callback, so only the real CLI reaches it.
RUN_DIR_ENTRIES = ("resume-into-a-foreign-dir", "read-only-output-dir", "resume-never-onto-checkpoints")


def bad_inputs(tmp_path: Path, earlier_run: Path) -> dict:
    """The files the catalogue's entries name: a truncated checkpoint, someone else's dir."""
    shutil.copyfile(earlier_run / "regression" / "checkpoints" / "last.ckpt", tmp_path / "truncated.ckpt")
    with open(tmp_path / "truncated.ckpt", "r+b") as file:
        file.truncate(2000)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("someone else's work\n")
    return {"earlier": earlier_run, "tmp": tmp_path}


def entries(names) -> list:
    return [pytest.param(*CATALOGUE[name], id=name) for name in names]


@pytest.mark.parametrize(
    ("args", "exit_code", "expected"), entries(name for name in CATALOGUE if name not in RUN_DIR_ENTRIES)
)
def test_bad_input_is_one_clear_error_and_loses_nothing(earlier_run, make_cfg, tmp_path, args, exit_code, expected):
    """Each entry of the catalogue is refused before training with its message, and earlier runs stay untouched
    (in-process; test_cli_errors.py checks the CLI's one line and exit code)."""
    places = bad_inputs(tmp_path, earlier_run)
    before = snapshot(earlier_run)
    args = [arg.format(**places) for arg in args]
    if exit_code is None:  # refused by Hydra while composing
        with pytest.raises((HydraException, OmegaConfBaseException)) as refused:
            make_cfg(*args)
    else:
        with pytest.raises(UserError) as refused:
            cli._train(make_cfg(*args))
        assert refused.value.exit_code == exit_code
    for text in expected:
        assert text in str(refused.value), str(refused.value)
    assert snapshot(earlier_run) == before


@pytest.mark.slow
@pytest.mark.parametrize(("args", "exit_code", "expected"), entries(RUN_DIR_ENTRIES))
def test_a_bad_run_dir_is_one_clear_line_and_loses_nothing(earlier_run, project, tmp_path, args, exit_code, expected):
    """The run-dir entries, through the real CLI: exit code, message on stderr, no traceback, nothing lost."""
    places = bad_inputs(tmp_path, earlier_run)
    before = snapshot(earlier_run)
    args = [arg.format(**places) for arg in args]
    result = run_cli("train.py", *QUIET, "trainer.max_epochs=1", *args, cwd=project, timeout=120)
    assert_user_error(result, exit_code, expected)
    assert snapshot(earlier_run) == before
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "someone else's work\n"
