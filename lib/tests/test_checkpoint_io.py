"""A checkpoint is written whole or not at all, wherever the run dir is: a kill or a full disk during a save leaves the
previous file as it was, nothing torn under a checkpoint's name, and nothing in $TMPDIR (issue 26, items 2 and 3)."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hydralight.core.errors import DiskFull
from hydralight.core.files import is_partial, remove_partials
from hydralight.core.runs import checkpoints as runs_checkpoints
from hydralight.core.runs.async_checkpoint import BackgroundCheckpointIO
from hydralight.core.runs.checkpoints import AtomicCheckpointIO

OLD = {"weights": torch.arange(8.0)}
NEW = {"weights": torch.ones(200_000)}  # 800 kB: a write that takes several write() calls


class FullDisk:
    """An open() for runs.checkpoints whose files take `room` bytes, then fail as a full disk does."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, path: Path, mode: str) -> "FullDisk":
        self.file = open(path, mode)  # noqa: SIM115 (closed in __exit__)
        return self

    def write(self, data: bytes) -> int:
        if self.room < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def __enter__(self) -> "FullDisk":
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(OLD, path)
    return path


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_a_save_puts_the_whole_file_in_place_and_leaves_nothing_else(saved, tmp_path, monkeypatch):
    """The new file replaces the old one under its name; no temporary file stays, beside it or in $TMPDIR."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmpdir"))
    (tmp_path / "tmpdir").mkdir()
    AtomicCheckpointIO().save_checkpoint(NEW, saved)
    assert torch.equal(torch.load(saved)["weights"], NEW["weights"])
    assert files_in(saved.parent) == ["last.ckpt"] and files_in(tmp_path / "tmpdir") == []


def test_a_full_disk_during_a_save_stops_in_one_error_and_keeps_the_previous_file(saved, monkeypatch):
    """ENOSPC midway: DiskFull (exit 74) saying the earlier checkpoints are intact, and they are: the
    previous file, byte for byte, and no partial one."""
    before = saved.read_bytes()
    monkeypatch.setattr(runs_checkpoints, "open", FullDisk(room=100_000), raising=False)
    with pytest.raises(DiskFull, match="disk is full") as stopped:
        AtomicCheckpointIO().save_checkpoint(NEW, saved)
    assert stopped.value.exit_code == 74
    assert saved.read_bytes() == before and files_in(saved.parent) == ["last.ckpt"]


def test_another_write_error_is_not_taken_for_a_full_disk(saved, monkeypatch):
    """Only a full disk (or a quota) becomes DiskFull; any other failure stays what it is."""

    def broken(path: Path, mode: str):
        raise PermissionError(errno.EACCES, "read-only")

    monkeypatch.setattr(runs_checkpoints, "open", broken, raising=False)
    with pytest.raises(PermissionError):
        AtomicCheckpointIO().save_checkpoint(NEW, saved)
    assert torch.equal(torch.load(saved)["weights"], OLD["weights"])


def test_async_a_failed_new_best_keeps_the_previous_best(saved, monkeypatch):
    """async_checkpoint=true: ModelCheckpoint asks for the new best, then the removal of the previous one. When the
    new one cannot be written, the previous best stays on disk, and the error is raised at the next operation."""
    monkeypatch.setattr(runs_checkpoints, "open", FullDisk(room=100_000), raising=False)
    background = BackgroundCheckpointIO(AtomicCheckpointIO())
    new_best = saved.with_name("epoch001.ckpt")
    background.save_checkpoint(NEW, new_best)
    with pytest.raises(DiskFull):  # at the removal if the write has failed by then, else at the wait
        background.remove_checkpoint(saved)
        background.wait()
    background.teardown()
    assert files_in(saved.parent) == ["last.ckpt"]
    assert torch.equal(torch.load(saved)["weights"], OLD["weights"])


WRITER = """
import sys, torch
from hydralight.core.runs.checkpoints import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
print("ready", flush=True)
step = 0
while True:
    step += 1
    io.save_checkpoint({"step": step, "weights": torch.full((2_000_000,), float(step))}, path)
"""


@pytest.mark.slow
def test_kill_9_during_saves_never_leaves_a_torn_checkpoint(tmp_path):
    """A process saving checkpoints in a loop is killed -9 at once and then at different moments: each time the
    checkpoint loads and is one whole save (its weights all equal its step), on a tmpfs when this machine has one
    (/dev/shm: another filesystem than $TMPDIR, where Lightning's own save copies into the final name), and the
    partial file a kill leaves is what the next start removes."""
    shm = Path("/dev/shm")
    base = Path(os.environ.get("HYDRALIGHT_TEST_TMPFS", shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path))
    directory = Path(base) / f"hydralight-kill-{os.getpid()}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 0, "weights": torch.zeros(2_000_000)}, path)
    try:
        for delay in (0.0, 0.8):  # at once (the first save), then mid-loop
            writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
            assert writer.stdout.readline().strip() == "ready"
            time.sleep(delay)
            writer.send_signal(signal.SIGKILL)
            writer.wait()
            writer.stdout.close()
            checkpoint = torch.load(path)
            assert torch.all(checkpoint["weights"] == float(checkpoint["step"])), delay
            assert all(name == "last.ckpt" or is_partial(directory / name) for name in files_in(directory))
            remove_partials(directory)
            assert files_in(directory) == ["last.ckpt"]
    finally:
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.rmdir()


@pytest.mark.parametrize("async_checkpoint", [False, True])
def test_every_trainer_saves_through_the_atomic_writer(make_cfg, async_checkpoint):
    """The Trainer the library builds saves through AtomicCheckpointIO; async_checkpoint=true, through the same one
    from a background thread."""
    from hydralight.core.build import build_trainer

    trainer = build_trainer(make_cfg(f"async_checkpoint={str(async_checkpoint).lower()}"), [], [])
    writer = trainer.strategy.checkpoint_io
    if async_checkpoint:
        assert isinstance(writer, BackgroundCheckpointIO)
        writer = writer.checkpoint_io
    assert type(writer) is AtomicCheckpointIO


class DiskFillsUp:
    """An open() for runs.checkpoints: the first `saves` checkpoints fit; every later one meets a full disk."""

    def __init__(self, saves: int) -> None:
        self.saves = saves

    def __call__(self, path: Path, mode: str) -> FullDisk:
        self.saves -= 1
        return FullDisk(room=1 << 40 if self.saves >= 0 else 1000)(path, mode)


def test_a_full_disk_mid_run_stops_it_with_the_earlier_checkpoints_whole(make_cfg, monkeypatch):
    """The disk fills up after the first epoch's checkpoints: the run stops with DiskFull (the CLI's
    exit 74, one line), and the checkpoints of the first epoch are there and load."""
    from hydralight.core.train import train

    cfg = make_cfg("trainer.max_epochs=3")
    monkeypatch.setattr(runs_checkpoints, "open", DiskFillsUp(saves=2), raising=False)
    with pytest.raises(DiskFull):
        train(cfg)
    checkpoints = sorted(Path(cfg.paths.output_dir, "checkpoints").iterdir())
    assert checkpoints and not [path for path in checkpoints if is_partial(path)]
    for path in checkpoints:
        assert torch.load(path, weights_only=False)["epoch"] == 0
