"""Checkpoints written whole or not at all, wherever the run dir is.

Lightning's TorchCheckpointIO saves through an fsspec transaction, which writes the file in `$TMPDIR` and then moves
it into place: with the run dir on another filesystem (a tmpfs, a network mount) that move is a copy into the final
name, so a kill during it leaves a torn `last.ckpt`, a full disk leaves a torn checkpoint for good, and each kill
leaks a checkpoint-sized file into `$TMPDIR`. Here a local checkpoint is written beside its final name and renamed
over it (hydralight.core.files.atomic_path): a kill leaves the previous file and a `.partial` one, which the next
start removes; a full disk leaves the previous file and raises CheckpointNotWritten (exit 74). Remote paths (s3://,
...) keep Lightning's own save.
"""

import errno
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hydralight.core.errors import CheckpointNotWritten
from hydralight.core.files import atomic_path

if TYPE_CHECKING:
    from lightning.pytorch.strategies import Strategy
    from omegaconf import DictConfig

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


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
            raise CheckpointNotWritten(
                f"the checkpoint {path} could not be written: no space left on its device ({error.__class__.__name__}"
                "). Nothing was put in its place and the checkpoints already there are intact: free some space, then "
                "run the same command again to continue from them."
            ) from error


def out_of_space(error: BaseException | None) -> bool:
    """Whether a failed write ran out of space: an OSError saying so, itself or anywhere in its chain."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            return True
        error = error.__cause__ or error.__context__
    return False


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
