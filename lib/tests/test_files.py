"""Every file the library writes goes through hydralight.core.files: whole or not at all, the temporary file
beside the destination (one filesystem: the rename is atomic), nothing left behind, and a file already there kept
when asked."""

import errno
import os
from pathlib import Path

import pytest

from hydralight.core import files


def test_a_write_that_fails_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(OSError, match="No space left"), files.atomic_path(path) as temporary:
        temporary.write_text("half of the new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a full disk would, mid-write
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_the_temporary_file_is_beside_the_destination_and_marked_partial(tmp_path):
    path = tmp_path / "deep" / "last.ckpt"
    with files.atomic_path(path) as temporary:
        assert temporary.parent == path.parent and files.is_partial(temporary) and temporary.suffix == ".ckpt"
        temporary.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    assert not [p for p in path.parent.iterdir() if files.is_partial(p)]


def test_without_overwrite_a_file_already_there_stays(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("theirs")
    with pytest.raises(FileExistsError), files.atomic_path(path, overwrite=False) as temporary:
        temporary.write_text("ours")
    assert path.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_the_partials_a_killed_run_left_are_removed_and_nothing_else(tmp_path):
    kept = [tmp_path / "last.ckpt", tmp_path / ".hidden", tmp_path / "notes.partial.txt"]
    for path in kept:
        path.write_text("x")
    left = files.partial_name(tmp_path / "epoch000-step000010.ckpt")
    left.write_text("torn")
    assert files.remove_partials(tmp_path) == [left]
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_a_run_removes_what_a_killed_run_left_half_written_in_its_dir(make_cfg):
    """The next start in a run dir removes the partial files of the run killed there (and only those)."""
    from hydralight.core.train import train

    cfg = make_cfg()
    run_dir = Path(cfg.paths.output_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    left = [files.partial_name(run_dir / "metrics.json"), files.partial_name(run_dir / "checkpoints" / "last.ckpt")]
    for path in left:
        path.write_text("torn")
    train(cfg)
    assert not any(path.exists() for path in left)
    assert (run_dir / "metrics.json").is_file()
