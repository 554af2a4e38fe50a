"""Files predict and export write where the user says: never over a file already there unless `overwrite=true`,
never half-written. No torch here: the CLI checks `output=` before anything heavy is imported."""

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from hydralight.core.errors import UserError


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
    """`write(temporary path)` beside `path`, then move the finished file into place in one step: a reader, a crash
    or a full disk never leaves half a file at `path`; without `overwrite`, a file that appeared meanwhile stays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name that `write` creates itself, so the file gets the usual permissions (mkstemp's are 0600).
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial{path.suffix}")
    try:
        write(temporary)
        if overwrite:
            os.replace(temporary, path)
            return path
        try:
            os.link(temporary, path)  # fails if `path` exists: no check-then-write race
        except FileExistsError as error:
            raise UserError(f"{key}={str(path)!r} already exists; nothing was written. Use overwrite=true.") from error
        except OSError:  # a filesystem without hard links
            if path.exists():
                raise UserError(
                    f"{key}={str(path)!r} already exists; nothing was written. Use overwrite=true."
                ) from None
            os.replace(temporary, path)
        return path
    finally:
        temporary.unlink(missing_ok=True)
