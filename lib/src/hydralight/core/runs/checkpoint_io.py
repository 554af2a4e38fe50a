"""Checkpoints written whole or not at all, wherever the run dir is.

Lightning's TorchCheckpointIO saves through an fsspec transaction, which writes the file in `$TMPDIR` and then moves
it into place: with the run dir on another filesystem (a tmpfs, a network mount) that move is a copy into the final
name, so a kill during it leaves a torn `last.ckpt`, a full disk leaves a torn checkpoint for good, and each kill
leaks a checkpoint-sized file into `$TMPDIR`. Here a local checkpoint is written beside its final name and renamed
over it (hydralight.core.files.atomic_path): a kill leaves the previous file and a `.partial` one, which the next
start removes; a full disk leaves the previous file and raises DiskFull (exit 74). Remote paths (s3://,
...) keep Lightning's own save.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hydralight.core.errors import DiskFull
from hydralight.core.files import atomic_path, out_of_space

if TYPE_CHECKING:
    from lightning.pytorch.strategies import Strategy
    from omegaconf import DictConfig


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


def checkpoint_plugins(cfg: "DictConfig", strategy: "Strategy | str") -> list[Any]:
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
