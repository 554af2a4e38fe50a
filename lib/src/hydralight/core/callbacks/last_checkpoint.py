"""`last.ckpt`: the newest training state, what `resume=auto` continues from, at the end of every epoch and, when
asked, every N optimizer steps or every so much time in between."""

from datetime import timedelta
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from hydralight.compat.lightning import save_at_every_epoch_end
from hydralight.core.errors import UserError

INTERVAL_FORMS = "'HH:MM:SS', 'DD:HH:MM:SS', a number of seconds, or {minutes: 30} (timedelta's keys)"


def time_interval(value: str | float | dict | timedelta | None, key: str) -> timedelta | None:
    """`value` as a timedelta, from the forms Lightning's `max_time` takes too: 'DD:HH:MM:SS' (or 'HH:MM:SS'), a
    dict of timedelta's keywords; and a number of seconds."""
    if value is None or isinstance(value, timedelta):
        return value
    try:
        if isinstance(value, str):
            parts = [float(part) for part in value.split(":")]
            if not 1 <= len(parts) <= 4:
                raise ValueError(value)
            seconds = sum(part * unit for part, unit in zip(reversed(parts), (1, 60, 3600, 86400), strict=False))
            interval = timedelta(seconds=seconds)
        elif isinstance(value, dict):
            interval = timedelta(**value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            interval = timedelta(seconds=value)
        else:
            raise TypeError(value)
    except (TypeError, ValueError) as error:
        raise UserError(f"{key}={value!r} is not a time interval. Use {INTERVAL_FORMS}.") from error
    if interval <= timedelta(0):
        raise UserError(f"{key}={value!r} must be longer than zero. Use {INTERVAL_FORMS}.")
    return interval


class LastCheckpoint(ModelCheckpoint):
    """Rewrites `<dirpath>/last.ckpt` at the end of every epoch (after its validation), and also every
    `every_n_train_steps` optimizer steps or every `train_time_interval` of training, mid-epoch.

    Lightning's ModelCheckpoint takes one of its three triggers (epochs, steps, time); a long epoch needs a step or
    time trigger so that a kill loses little, and the epoch's end still needs its own save: the state after the
    epoch's validation (early stopping's counters, the best score) is what a resumed run must continue from. A step
    save that falls on an epoch's last batch is left to that epoch-end save, which comes after validation.
    Mid-epoch checkpoints resume exactly because the data loaders are torchdata's StatefulDataLoader, whose
    position and shuffle order Lightning saves in the checkpoint.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "last",
        every_n_train_steps: int | None = None,
        train_time_interval: str | float | dict | None = None,
        verbose: bool = False,
    ) -> None:
        """Named arguments (no `**kwargs`), so the config checks catch a misspelt or mistyped key."""
        key = "callbacks.last_checkpoint"
        if every_n_train_steps is not None and (isinstance(every_n_train_steps, bool) or every_n_train_steps < 1):
            raise UserError(f"{key}.every_n_train_steps={every_n_train_steps!r} must be a whole number >= 1, or null.")
        if every_n_train_steps is not None and train_time_interval is not None:
            raise UserError(
                f"{key}.every_n_train_steps={every_n_train_steps!r} and {key}.train_time_interval="
                f"{train_time_interval!r} are both set: choose one of them (the other null)."
            )
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,  # no metric: every save replaces the previous last.ckpt
            save_top_k=1,
            enable_version_counter=False,
            verbose=verbose,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=time_interval(train_time_interval, f"{key}.train_time_interval"),
        )
        save_at_every_epoch_end(self)  # the epoch-end save too: Lightning's constructor admits one trigger only

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx + 1 < trainer.num_training_batches:  # the last batch: the epoch-end save follows validation
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
