"""Reading checkpoints the user points at: always weights-only, with a clear message when the file is no checkpoint."""

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hydralight.errors import UserError

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer


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


def checkpoint_dir(trainer: "Trainer") -> Path:
    """Where this run's checkpoints go: the ModelCheckpoint's dir, else `<run dir>/checkpoints`."""
    dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
    return Path(dirpath) if dirpath else Path(trainer.default_root_dir) / "checkpoints"


def check_compatible(model: "LightningModule", checkpoint: dict[str, Any], path: str | Path) -> None:
    """A checkpoint of another architecture fails here with the differences named, not deep inside fit."""
    expected, saved = model.state_dict(), checkpoint["state_dict"]
    missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
    reshaped = sorted(k for k in expected.keys() & saved.keys() if expected[k].shape != saved[k].shape)
    if not (missing or unexpected or reshaped):
        return
    differences = [
        f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shapes", reshaped))
        if keys
    ]
    raise UserError(
        f"ckpt_path={str(path)!r} was written by another model ({'; '.join(differences)}). "
        "Resume with the model config it was trained with (see its run's .hydra/config.yaml), or start a new run."
    )
