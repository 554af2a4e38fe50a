"""Files predict and export write where the user says: never over a file already there unless `overwrite=true`,
never half-written. No torch here: the CLI checks `output=` before anything heavy is imported."""

import os
from collections.abc import Callable
from pathlib import Path

from hydralight.core.errors import UserError
from hydralight.core.files import atomic_path


def check_output(
    path: str | Path, overwrite: object, ckpt_path: object = None, key: str = "output", example: str = "out.csv"
) -> Path:
    """`path` as a Path, or a UserError when it is a directory, the checkpoint being read, or an existing file
    without `overwrite=true`. `example` is the file name the message suggests inside a directory."""
    if not isinstance(overwrite, bool):
        raise UserError(f"overwrite={overwrite!r} is not valid. Use true or false.")
    text, path = str(path), Path(path)
    if path.is_dir() or text.endswith(("/", os.sep)):
        raise UserError(f"{key}={text!r} is a directory; give a file path, e.g. {key}={str(path / example)!r}")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"{key}={text!r}: {str(path.parent)!r} is a file, not a directory.")
    if ckpt_path is not None and path.exists() and path.resolve() == Path(str(ckpt_path)).resolve():
        raise UserError(
            f"{key}={text!r} is the checkpoint being read (ckpt_path); nothing was written. Give another file."
        )
    if path.exists() and not overwrite:
        raise UserError(
            f"{key}={text!r} already exists; nothing was written. Give another {key}=<file>, or overwrite=true "
            "to replace it."
        )
    return path


def write_atomically(path: Path, write: Callable[[Path], None], overwrite: bool, key: str = "output") -> Path:
    """`write(temporary path)` beside `path`, then the finished file put in place in one step (hydralight.core.files):
    a reader, a crash or a full disk never leaves half a file at `path`; without `overwrite`, a file that appeared
    meanwhile stays."""
    try:
        with atomic_path(path, overwrite=overwrite) as temporary:
            write(temporary)
    except FileExistsError as error:
        raise UserError(f"{key}={str(path)!r} already exists; nothing was written. Use overwrite=true.") from error
    return path
