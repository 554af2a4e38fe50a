"""async_checkpoint=true: each checkpoint written by a background thread holds exactly its own step (bitwise the
synchronous run's), a resume from it ends equal to an uninterrupted run, preemption, the NaN guard and a full disk
still find their checkpoints on disk, a kill -9 mid-write leaves the previous file intact, and the strategies that
write sharded checkpoints themselves are refused in one line. The task is hydralight.testing's stateful one (Adam's
moments, dropout's RNG: a checkpoint with every kind of state).

Most runs here hold every background write until the code under test waits for it (`held_writes`): the slowest
disk there can be, on which training always runs ahead of every pending checkpoint. What a test asserts then holds
whatever the machine's timing."""

import concurrent.futures
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig
from test_cli_errors import assert_user_error
from test_reliability import QUIET, assert_identical_training_state, disk_fills_after, load_state

from hydralight.core.build import build_trainer
from hydralight.core.errors import DiskFull, Preempted, TrainingDiverged, UserError
from hydralight.core.runs.async_checkpoint import BackgroundCheckpointIO, cpu_snapshot
from hydralight.core.train import train
from hydralight.testing import QUICK, compose, run_cli

# Adam, dropout, the library's in-memory loaders; 4 steps an epoch.
STATEFUL = ("model=stateful", "data=stateful", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
            "trainer.limit_test_batches=2")  # fmt: skip
HELD_AT_MOST = 30.0  # s: a write nobody waits for lands after this (only a broken writer waits that long)
ASYNC = "async_checkpoint=true"
# Every optimizer step its own file, kept: the checkpoints of two runs compared step by step.
EVERY_STEP = (
    "+callbacks.every_step._target_=lightning.pytorch.callbacks.ModelCheckpoint",
    "+callbacks.every_step.dirpath=${paths.output_dir}/steps",
    "+callbacks.every_step.filename='step{step:03d}'",
    "+callbacks.every_step.auto_insert_metric_name=false",
    "+callbacks.every_step.every_n_train_steps=1",
    "+callbacks.every_step.save_top_k=-1",
)


@pytest.fixture
def held_writes(monkeypatch):
    """Writes from any thread but the main one start only once the main thread waits for pending futures (as the
    writer does before a load, at a stage's end, for the NaN guard): until then training runs on."""
    waited = threading.Event()
    write, wait = TorchCheckpointIO.save_checkpoint, concurrent.futures.wait

    def held(self, *args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            waited.wait(HELD_AT_MOST)
        write(self, *args, **kwargs)

    def waiting(futures, *args, **kwargs):
        waited.set()
        try:
            return wait(futures, *args, **kwargs)
        finally:
            waited.clear()  # the writes asked for after this wait are held again

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", held)
    monkeypatch.setattr(concurrent.futures, "wait", waiting)


def config(tmp_path: Path, name: str, *overrides: str) -> DictConfig:
    return compose("train", tmp_path / name, (*QUICK, "logger=none", *STATEFUL, *overrides))


def assert_same_contents(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Equal values, tensors bitwise (dtype and shape too); the run dirs inside the two (paths in callback states)
    compared as `<run>`."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, a.keys(), b.keys() if isinstance(b, dict) else b)
        for key in a:
            assert_same_contents(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for index, (left, right) in enumerate(zip(a, b, strict=True)):
            assert_same_contents(left, right, f"{where}[{index}]")
    else:
        assert a == b, (where, a, b)


def without_run_dir(checkpoint: dict, run_dir: Path) -> dict:
    """The checkpoint with its run dir's path (in ModelCheckpoint states) replaced by `<run>`."""

    def strip(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(str(run_dir), "<run>")
        if isinstance(value, dict):
            return {strip(key): strip(item) for key, item in value.items()}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    return strip(checkpoint)


def test_each_async_checkpoint_holds_exactly_its_own_step(tmp_path, held_writes):
    """A checkpoint every step, each written while training has already moved on: every file holds bitwise what the
    synchronous run's file of that step holds (weights, optimizer state, loops, callbacks, RNG states)."""
    for name, switch in (("sync", "async_checkpoint=false"), ("async", ASYNC)):
        train(config(tmp_path, name, *EVERY_STEP, switch, "test=false"))
    names = sorted(path.name for path in (tmp_path / "sync" / "steps").glob("*.ckpt"))
    assert names == [f"step{step:03d}.ckpt" for step in range(1, 5)]
    assert sorted(path.name for path in (tmp_path / "async" / "steps").glob("*.ckpt")) == names
    for name in [*names, "../checkpoints/last.ckpt"]:
        sync, background = (without_run_dir(load_state(tmp_path / run / "steps" / name), tmp_path / run)
                            for run in ("sync", "async"))  # fmt: skip
        assert background["global_step"] == sync["global_step"]
        assert_same_contents(sync, background, name)


def test_checkpoints_replaced_while_their_write_is_pending_are_gone(tmp_path, held_writes):
    """A ModelCheckpoint keeping the 2 newest, a save every step: each removal is asked for while the file it removes
    is still being written. Exactly the 2 newest are left (a removal that ran at once would find no file yet, and
    the file would land after it)."""
    keep_two = (
        *EVERY_STEP[:-1],
        "+callbacks.every_step.save_top_k=2",
        "+callbacks.every_step.monitor=step",
        "+callbacks.every_step.mode=max",
    )
    train(config(tmp_path, "run", *keep_two, ASYNC, "test=false"))
    assert sorted(path.name for path in (tmp_path / "run" / "steps").iterdir()) == ["step003.ckpt", "step004.ckpt"]


def test_a_crashed_async_run_resumes_from_its_last_step_checkpoint_bitwise_equal(tmp_path, held_writes):
    """Step checkpoints every 3 steps, a crash at step 7 while the step-6 checkpoint is still being written: the
    step-6 file is on disk by the time the error reaches the caller, and the same config again resumes from it,
    mid-epoch, to the weights and optimizer state of an uninterrupted (synchronous) run."""
    run = ("trainer.max_epochs=2", "trainer.deterministic=true", "callbacks.last_checkpoint.every_n_train_steps=3",
           "test=false")  # fmt: skip
    train(config(tmp_path, "uninterrupted", *run))
    crash = ("+callbacks.crash._target_=hydralight.testing.faults.CrashAt", "+callbacks.crash.step=7")
    with pytest.raises(RuntimeError, match="crash at step 7"):
        train(config(tmp_path, "resumed", *run, ASYNC, *crash))
    assert load_state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["global_step"] == 6

    train(config(tmp_path, "resumed", *run, ASYNC))
    final = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    assert load_state(final)["global_step"] == 8
    assert_identical_training_state(tmp_path / "uninterrupted" / "checkpoints" / "last.ckpt", final)


def test_preemption_checkpoint_is_complete_on_disk_before_the_run_stops(tmp_path, held_writes):
    """SIGTERM at step 5: preempted.ckpt, whose write starts only after the stop began, is on disk and loads when
    the run raises Preempted (exit 75), before any exit; it holds the step the run stopped at."""
    sigterm = ("+callbacks.sigterm._target_=hydralight.testing.faults.SigtermAt", "+callbacks.sigterm.step=5")
    with pytest.raises(Preempted, match="stopped by a signal at step 5"):
        train(config(tmp_path, "run", "trainer.max_epochs=3", ASYNC, *sigterm))
    assert load_state(tmp_path / "run" / "checkpoints" / "preempted.ckpt")["global_step"] == 5


def test_nan_guard_names_a_checkpoint_still_being_written(tmp_path, held_writes):
    """A NaN at the first step of epoch 1, while epoch 0's checkpoints are still being written: the message names
    the last good checkpoint (it waits for them), not 'none was written yet'."""
    nan = ("+callbacks.inject_nan._target_=hydralight.testing.faults.InjectNaN", "+callbacks.inject_nan.at_step=4")
    with pytest.raises(TrainingDiverged) as stopped:
        train(config(tmp_path, "run", "trainer.max_epochs=2", ASYNC, *nan))
    last_good = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert f"Last good checkpoint: {last_good}" in str(stopped.value)
    assert load_state(last_good)["global_step"] == 4


def test_a_full_disk_in_the_background_is_the_same_clear_error(tmp_path, monkeypatch):
    """ENOSPC raised by the writer thread reaches the run as the synchronous run's DiskFull; what was written before
    loads intact."""
    disk_fills_after(monkeypatch, saves=2)  # epoch 0's best and last.ckpt go through; epoch 1's do not
    with pytest.raises(DiskFull, match="disk is full"):
        train(config(tmp_path, "run", "trainer.max_epochs=2", ASYNC, "test=false"))
    monkeypatch.undo()
    assert load_state(tmp_path / "run" / "checkpoints" / "last.ckpt")["epoch"] == 0


def test_a_tuner_restores_the_checkpoint_it_just_saved(tmp_path, held_writes):
    """tune=lr_find saves the training state, runs its trials, then loads that file back at once: the load waits for
    the write (Lightning's own AsyncCheckpointIO finds no file there)."""
    cfg = config(tmp_path, "run", "tune=lr_find", "callbacks.lr_find.num_training_steps=10", ASYNC, "test=false")
    train(cfg)
    assert (tmp_path / "run" / "lr_find.json").is_file()
    assert not list((tmp_path / "run").glob(".lr_find*.ckpt")), "the tuner's own checkpoint is removed after use"


def test_snapshot_is_taken_when_the_save_is_asked_for_and_loads_and_removes_wait_their_turn(tmp_path):
    """The unit behind the runs above. A tensor changed in place while its write waits leaves the file with the value
    it had when the save was asked for; a load waits for that write; a removal asked for while the file's write is
    pending runs after it (else the file would land after its removal); the writer still pickles (ddp_spawn sends
    the Trainer to its processes)."""
    release = threading.Event()

    class Held(TorchCheckpointIO):  # a write that waits for `release`, as a slow disk would
        def save_checkpoint(self, *args, **kwargs):
            release.wait(10)
            super().save_checkpoint(*args, **kwargs)

    writer = BackgroundCheckpointIO(Held())
    weight = torch.zeros(4)
    writer.save_checkpoint({"w": weight}, tmp_path / "a.ckpt")
    weight.add_(1.0)  # the next optimizer step, while the write waits
    threading.Timer(0.2, release.set).start()
    assert torch.equal(writer.load_checkpoint(tmp_path / "a.ckpt")["w"], torch.zeros(4))

    release.clear()
    writer.save_checkpoint({"w": weight}, tmp_path / "b.ckpt")
    writer.remove_checkpoint(tmp_path / "b.ckpt")
    release.set()
    writer.teardown()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.ckpt"]

    plain = BackgroundCheckpointIO(TorchCheckpointIO())
    plain.save_checkpoint({"w": weight}, tmp_path / "c.ckpt")  # its thread started
    assert isinstance(pickle.loads(pickle.dumps(plain)), BackgroundCheckpointIO)
    plain.teardown()


def test_snapshot_keeps_shared_storage_shared_on_the_cpu():
    """Views of one storage (tied weights) stay views of one copy, so the file holds it once, as torch.save of the
    live tensors would; the copy is on the CPU and no longer follows the original."""
    weight = torch.arange(6.0)
    snapshot = cpu_snapshot({"w": weight, "tied": weight.view(2, 3), "part": weight[2:4], "step": 3})
    assert snapshot["tied"].untyped_storage().data_ptr() == snapshot["w"].untyped_storage().data_ptr()
    assert snapshot["part"].untyped_storage().data_ptr() == snapshot["w"].untyped_storage().data_ptr()
    assert snapshot["w"].untyped_storage().data_ptr() != weight.untyped_storage().data_ptr()
    weight.zero_()
    assert torch.equal(snapshot["part"], torch.tensor([2.0, 3.0])) and snapshot["step"] == 3
    assert all(tensor.device.type == "cpu" for tensor in (snapshot["w"], snapshot["tied"], snapshot["part"]))


def test_a_background_error_is_raised_once():
    """A write that failed in the thread is raised at the next checkpoint operation, then forgotten: the stage's
    teardown afterwards does not raise it a second time over whatever the run does next."""

    class Failing(TorchCheckpointIO):
        def save_checkpoint(self, *args, **kwargs):
            raise OSError("disk gone")

    writer = BackgroundCheckpointIO(Failing())
    writer.save_checkpoint({"w": torch.zeros(1)}, "/nonexistent/a.ckpt")
    with pytest.raises(OSError, match="disk gone"):
        writer.wait()
    writer.teardown()


# ---- Strategies: the ones that write sharded checkpoints themselves are refused.

SHARDED_SAVE = (
    "strategy=auto",
    "~strategy.name",
    "+strategy._target_=lightning.pytorch.strategies.ModelParallelStrategy",
    "+strategy.save_distributed_checkpoint=true",
)
REFUSAL = "async_checkpoint=true: ModelParallelStrategy writes sharded checkpoints itself"


def test_a_strategy_saving_sharded_checkpoints_is_refused_naming_what_works(tmp_path):
    with pytest.raises(UserError, match=REFUSAL) as refused:
        build_trainer(config(tmp_path, "run", ASYNC, *SHARDED_SAVE), callbacks=[], loggers=[])
    assert "async_checkpoint=false" in str(refused.value) and "strategy=fsdp" in str(refused.value)
    build_trainer(config(tmp_path, "run", *SHARDED_SAVE), callbacks=[], loggers=[])  # synchronous: no objection


@pytest.mark.slow
def test_the_refusal_is_one_line_through_the_cli(project, tmp_path):
    result = run_cli("train.py", *QUIET, ASYNC, *SHARDED_SAVE, f"hydra.run.dir={tmp_path / 'run'}", cwd=project,
                     timeout=120)  # fmt: skip
    assert_user_error(result, 2, [f"error: {REFUSAL}"])
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_every_shipped_strategy_writes_through_the_background_writer(tmp_path):
    """The strategies of conf/strategy that save one file (fsdp and model_parallel consolidate theirs on rank 0)
    take the switch: their Trainer's CheckpointIO is the background writer."""
    for option in ("auto", "ddp", "ddp_spawn", "dp", "fsdp", "model_parallel"):
        trainer = build_trainer(config(tmp_path, option, ASYNC, f"strategy={option}"), callbacks=[], loggers=[])
        assert isinstance(trainer.strategy.checkpoint_io, BackgroundCheckpointIO), option


# ---- Atomicity: the process boundary is what is tested, so a child process, killed with SIGKILL.

KILLED_MID_WRITE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    from fsspec.implementations.local import LocalFileOpener
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
    from hydralight.core.runs.async_checkpoint import BackgroundCheckpointIO

    target, marker = Path(sys.argv[1]), Path(sys.argv[2])
    writer = BackgroundCheckpointIO(TorchCheckpointIO())
    writer.save_checkpoint({"global_step": 1, "w": torch.ones(1 << 20)}, target)
    writer.wait()  # the old last.ckpt, complete

    def half_then_hang(self, data):  # the next write stops half-way, as a kill -9 would catch it
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        marker.touch()
        time.sleep(600)

    LocalFileOpener.write = half_then_hang
    writer.save_checkpoint({"global_step": 2, "w": torch.full((1 << 20,), 2.0)}, target)
    time.sleep(600)
    """
)


@pytest.mark.slow
def test_a_kill_mid_write_leaves_the_previous_checkpoint_intact(tmp_path):
    """SIGKILL while the background thread has written half of the new last.ckpt: the old one is still there,
    bytes unchanged, and loads; the half-written bytes are in a temporary file elsewhere (fsspec's transaction,
    which Lightning's _atomic_save writes through, renames it into place only once complete)."""
    target, marker, staging = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "mid-write", tmp_path / "tmp"
    staging.mkdir()
    env = {**os.environ, "TMPDIR": str(staging)}  # where fsspec stages the file before the rename
    child = subprocess.Popen([sys.executable, "-c", KILLED_MID_WRITE, str(target), str(marker)], cwd=tmp_path, env=env,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, child.stderr.read()
        assert time.monotonic() < deadline, "the child never reached the middle of its second write"
        time.sleep(0.05)
    before = target.read_bytes()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)

    assert target.read_bytes() == before
    old = torch.load(target, weights_only=True)
    assert old["global_step"] == 1 and torch.equal(old["w"], torch.ones(1 << 20))
    (partial,) = list(staging.iterdir())
    assert 0 < partial.stat().st_size < len(before), "the kill did not land mid-write"
    assert sorted(path.name for path in target.parent.iterdir()) == ["last.ckpt"]
