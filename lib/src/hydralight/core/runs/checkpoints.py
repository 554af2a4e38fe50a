"""Checkpoints: written whole or not at all, wherever the run dir is (`AtomicCheckpointIO`); read, when the user points
at one, always weights-only, with a clear message when the file is no checkpoint; finding the one a run resumes from,
and starting a run from another's weights (`init_from`). Rebuilding the task a checkpoint was trained on, for eval,
predict and export, is `runs.trained`.

Lightning's TorchCheckpointIO saves through an fsspec transaction, which writes the file in `$TMPDIR` and then moves
it into place: with the run dir on another filesystem (a tmpfs, a network mount) that move is a copy into the final
name, so a kill during it leaves a torn `last.ckpt`, a full disk leaves a torn checkpoint for good, and each kill
leaks a checkpoint-sized file into `$TMPDIR`. Here a local checkpoint is written beside its final name and renamed
over it (hydralight.core.files.atomic_path): a kill leaves the previous file and a `.partial` one, which the next
start removes; a full disk leaves the previous file and raises DiskFull (exit 74). Remote paths (s3://,
...) keep Lightning's own save.
"""

import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from hydralight.core.errors import DiskFull, UserError
from hydralight.core.files import atomic_path, out_of_space

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.strategies import Strategy

log = logging.getLogger(__name__)
TASK_KEY = "task"  # {"module": <class path>, "data": <data config>}, written by hydralight.core.callbacks.TaskRecord


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local saves are atomic on any filesystem (see the module's docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or ("://" in str(path) and not str(path).startswith("file://")):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)  # its own checks and remotes
            return
        path = Path(str(path).removeprefix("file://"))
        try:
            # Through a Python file, so that the OSError of a full disk is kept (torch's own writer turns it into
            # "unexpected pos").
            with atomic_path(path) as temporary, open(temporary, "wb") as file:
                torch.save(checkpoint, file)
        except (OSError, RuntimeError) as error:
            if not out_of_space(error):
                raise
            raise DiskFull(
                f"the disk is full: the checkpoint {path} could not be written. Nothing was put in its place and the "
                "checkpoints already there are intact: free some space, then run the same command to continue."
            ) from error


def checkpoint_plugins(cfg: DictConfig, strategy: "Strategy | str") -> list[Any]:
    """The Trainer's plugins: those its config names, and a CheckpointIO: the config's own if it names one, else
    AtomicCheckpointIO; under async_checkpoint=true, that one written from a background thread."""
    from hydra.utils import instantiate
    from lightning.pytorch.plugins.io import CheckpointIO

    configured = instantiate(cfg.trainer.plugins, _convert_="all") if cfg.trainer.get("plugins") else []
    configured = list(configured) if isinstance(configured, list | tuple) else [configured]
    own = [plugin for plugin in configured if isinstance(plugin, CheckpointIO)]
    others = [plugin for plugin in configured if not isinstance(plugin, CheckpointIO)]
    writer = own[0] if own else AtomicCheckpointIO()
    if cfg.get("async_checkpoint"):
        from hydralight.core.runs.async_checkpoint import BackgroundCheckpointIO, check_async_checkpoint

        check_async_checkpoint(strategy)
        writer = BackgroundCheckpointIO(writer)
    return [*others, writer, *own[1:]]  # a second CheckpointIO of the config's: Lightning's own error names both


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """Load `path` (the value of config key `key`) with `weights_only=True` (memory-mapped, so a large file costs
    little) and check its shape."""
    if not zipfile.is_zipfile(path):
        raise UserError(f"{key}={str(path)!r} is not a checkpoint: Lightning writes .ckpt files as zip archives.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # pickle, zip and weights-only errors alike: the file is not a usable checkpoint
        # Only torch's first line: the rest advises weights_only=False, which is no advice for an untrusted file.
        reason = (str(error).strip().splitlines() or [""])[0]
        raise UserError(
            f"{key}={str(path)!r} is not a loadable checkpoint ({type(error).__name__}: {reason}). "
            "Checkpoints are read with weights_only=True; give a .ckpt file this project wrote."
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{key}={str(path)!r} holds no Lightning checkpoint (no 'state_dict' in it).")
    return checkpoint


def newest_checkpoint(run_dir: str | Path, checkpoint_dir: str | Path) -> Path | None:
    """The loadable checkpoint with the most optimizer steps (newest file on a tie), from `checkpoint_dir` and the
    ones Lightning's SLURM auto-requeue writes into the run dir (hpc_ckpt_N.ckpt); unreadable ones are skipped."""
    candidates = []
    for path in [*Path(checkpoint_dir).glob("*.ckpt"), *Path(run_dir).glob("hpc_ckpt_*.ckpt")]:
        try:
            checkpoint = read_checkpoint(path)
        except UserError as error:
            log.warning("Skipping %s: %s", path, error)
            continue
        candidates.append((checkpoint.get("global_step", 0), path.stat().st_mtime, path))
    return max(candidates)[2] if candidates else None


def checkpoint_dir(trainer: "Trainer") -> Path:
    """Where this run's checkpoints go: the ModelCheckpoint's dir, else `<run dir>/checkpoints`."""
    dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
    return Path(dirpath) if dirpath else Path(trainer.default_root_dir) / "checkpoints"


def state_differences(expected: dict[str, Any], saved: dict[str, Any], shown: int = 3) -> str:
    """What keeps `saved` from loading into a model whose state dict is `expected`, in a few words ("" if nothing):
    the tensors missing from it, those it has besides, and those of another shape (both shapes)."""
    missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
    reshaped = [
        f"{key} {tuple(saved[key].shape)} -> {tuple(expected[key].shape)}"
        for key in sorted(expected.keys() & saved.keys())
        if expected[key].shape != saved[key].shape
    ]
    return "; ".join(
        f"{label}: {', '.join(keys[:shown])}{f' and {len(keys) - shown} more' if len(keys) > shown else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shapes", reshaped))
        if keys
    )


def check_compatible(model: "LightningModule", checkpoint: dict[str, Any], path: str | Path) -> None:
    """A checkpoint of another architecture fails here with the differences named, not deep inside fit."""
    differences = state_differences(model.state_dict(), checkpoint["state_dict"])
    if differences:
        raise UserError(
            f"ckpt_path={str(path)!r} was written by another model ({differences}). Resume with the model config it "
            "was trained with (see its run's .hydra/config.yaml), or start a new run."
        )


def init_from_checkpoint(model: "LightningModule", path: str | Path, strict: bool = True) -> None:
    """`init_from=<ckpt>`: the model starts from that checkpoint's weights and nothing else of it (a fresh optimizer
    and schedule, epoch and step 0): fine-tuning. Strict: every tensor must match by name and shape. Not strict: the
    ones that match are loaded, the rest stay as the model initialized them, and both are listed."""
    from hydralight.core.console import info

    saved, expected = read_checkpoint(path, key="init_from")["state_dict"], model.state_dict()
    differences = state_differences(expected, saved)
    if differences and strict:
        raise UserError(
            f"init_from={str(path)!r} does not fit {type(model).__name__} ({differences}). Use a checkpoint of "
            "the same model, or init_from_strict=false to load the tensors that fit and initialize the others."
        )
    fitting = {key: value for key, value in saved.items() if key in expected and expected[key].shape == value.shape}
    model.load_state_dict(fitting, strict=False)
    info("Initialized %d of %d tensors from %s (its weights only)", len(fitting), len(expected), path)
    if differences:
        info("Not loaded (init_from_strict=false): %s", state_differences(expected, saved, shown=20))


def resume_checkpoint(cfg: DictConfig, trainer: "Trainer", model: "LightningModule") -> str | None:
    """`ckpt_path` if given; else with `resume=auto` the run dir's newest loadable checkpoint; else None."""
    from hydralight.core.console import info

    path = cfg.ckpt_path
    if path is None and cfg.get("resume", "auto") == "auto":
        path = newest_checkpoint(trainer.default_root_dir, checkpoint_dir(trainer))
    if path is None:
        return None
    checkpoint = read_checkpoint(path)
    check_compatible(model, checkpoint, path)  # a clear error now, not a traceback from inside fit
    check_epochs(trainer.max_epochs, checkpoint, path, explicit=cfg.ckpt_path is not None)
    info("Resuming from %s", path)
    return str(path)


def check_epochs(max_epochs: int | None, checkpoint: dict[str, Any], path: object, explicit: bool) -> None:
    """Lightning refuses a checkpoint past `max_epochs` from inside fit, with a traceback: say it now, and what to
    set. `explicit`: the checkpoint is the user's `ckpt_path`, not the run dir's own."""
    epoch = checkpoint.get("epoch", 0)
    if max_epochs is None or max_epochs == -1 or epoch <= max_epochs:  # Lightning's own condition
        return
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    trained = progress.get("processed", epoch)
    fresh = "drop ckpt_path to start afresh" if explicit else "start a new run (another run_name)"
    raise UserError(
        f"trainer.max_epochs={max_epochs} is below the epoch of the checkpoint this run continues: {path} is at "
        f"epoch {epoch} ({trained} epochs trained). trainer.max_epochs counts every epoch, those included: set "
        f"trainer.max_epochs={max(trained, epoch) + 1} or more to train further, or {fresh}."
    )
