"""Writing a file whole or not at all, on any filesystem: the one place every file the library writes goes through.

The finished file is written under a temporary name in the destination's own directory (a rename within one
filesystem is atomic; Lightning's own save renames from `$TMPDIR`, a copy across filesystems), flushed to disk,
renamed over the destination, and the directory flushed too, so that after a crash or a kill -9 the path holds the
old file or the new one, never part of one. A temporary name that a dead process left behind is recognised by
`is_partial` and removed at the next start (`remove_partials`). `process_alive` tells whether the process that left
a run's lock or a dataset's staging dir still runs.
"""

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial"  # in every temporary name, so that a dead run's leftovers can be found and removed
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # what a full disk or a quota raises


def partial_name(path: Path) -> Path:
    """A fresh temporary name beside `path`, hidden, marked `.partial`, keeping the suffix (tools that look at it)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL}{path.suffix}")


def is_partial(path: Path) -> bool:
    return path.name.startswith(".") and PARTIAL in path.name


def fsync_file(path: Path) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries (the rename itself); where a filesystem cannot, the rename is what there is."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write the whole file to; when the block ends without an error, the
    file is flushed and put in place in one step (without `overwrite`, FileExistsError if `path` appeared meanwhile,
    and the file there stays). On an error, or a full disk, the temporary file is removed and `path` is as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_name(path)
    try:
        yield temporary
        fsync_file(temporary)
        if overwrite:
            os.replace(temporary, path)
        else:
            _place_new(temporary, path)
        fsync_dir(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _place_new(temporary: Path, path: Path) -> None:
    """Put `temporary` at `path` only if nothing is there: a hard link fails if it exists (no check-then-write race)."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(temporary, path)


def write_text(path: str | Path, text: str, newline: str | None = None) -> None:
    """`path.write_text(text)`, whole or not at all."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8", newline=newline)


def remove_partials(directory: str | Path) -> list[Path]:
    """Remove the temporary files a killed run left in `directory` (its own run dir: no other run writes there)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = [path for path in directory.iterdir() if path.is_file() and is_partial(path)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def out_of_space(error: BaseException | None) -> bool:
    """Whether a failed write ran out of space: an OSError saying so, itself or anywhere in its chain."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            return True
        error = error.__cause__ or error.__context__
    return False


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine is running (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
