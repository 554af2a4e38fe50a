"""Reading checkpoints the user points at: always weights-only, with a clear message when the file is no checkpoint."""

import zipfile
from pathlib import Path
from typing import Any

import torch

from hydralight.errors import UserError


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load `path` with `weights_only=True` (memory-mapped, so a large file costs little) and check its shape."""
    if not zipfile.is_zipfile(path):
        raise UserError(f"ckpt_path={str(path)!r} is not a checkpoint: Lightning writes .ckpt files as zip archives.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # pickle, zip and weights-only errors alike: the file is not a usable checkpoint
        # Only torch's first line: the rest advises weights_only=False, which is no advice for an untrusted file.
        reason = (str(error).strip().splitlines() or [""])[0]
        raise UserError(
            f"ckpt_path={str(path)!r} is not a loadable checkpoint ({type(error).__name__}: {reason}). "
            "Checkpoints are read with weights_only=True; give a .ckpt file this project wrote."
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"ckpt_path={str(path)!r} holds no Lightning checkpoint (no 'state_dict' in it).")
    return checkpoint
