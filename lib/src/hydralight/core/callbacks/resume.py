"""How a run stops and resumes: what a checkpoint needs, besides what Lightning saves, to continue the run exactly and
to rebuild its task; the checkpoint a run continues from; and what each signal that stops it does.

- `ResumeState`: every random number generator, and the train loader's position only where an epoch is cut in two.
- `Preemption`: on SIGTERM (or SIGUSR1, SLURM's warning signal) save a checkpoint, then stop with exit code 75.
- `TaskRecord`: which task wrote the checkpoint, so eval, predict and export rebuild that task from it.
  (The train task adds these three to every run, whatever its callbacks config says.)
- `LastCheckpoint` (callbacks.last_checkpoint): `last.ckpt`, the newest training state, what `resume=auto` continues
  from, at the end of every epoch and, when asked, every N optimizer steps or every so much time in between.
- `stops_cleanly`: the signals that stop a run, each with its line and its documented exit code, at any moment.

Inside Lightning's stages (fit, test) Lightning turns SIGTERM into a stop at the next batch, where Preemption saves a
checkpoint: exit 75, and the same command continues. Outside them (start-up, between training and its test)
Lightning has no handler installed and SIGTERM would kill the process with no line (exit 143). While a run lives
(`stops_cleanly`), SIGTERM and SIGHUP (the terminal that started it closed) are handled here: inside a stage they are
left to Lightning (SIGHUP as the SIGTERM Lightning listens for); outside one they stop the run at once with the
same exit 75 and a line saying what is on disk. SIGKILL cannot be caught: a run killed -9 exits 137 with no line
(resume=auto continues it), and so do the other ranks of a DDP run whose rank died (Lightning's launcher kills them).
"""

import contextlib
import copy
import os
import random
import signal
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from hydralight.compat.lightning import (
    forget_train_loader,
    loader_states_to_load,
    save_at_every_epoch_end,
    train_loader_built,
)
from hydralight.core.errors import Preempted, UserError
from hydralight.core.runs.checkpoints import TASK_KEY, checkpoint_dir

PREEMPTED_CHECKPOINT = "preempted.ckpt"
NOT_RESUMABLE = (
    "Resuming mid-epoch with a train loader that keeps no position ({loader}): this epoch starts again from its "
    "first batch, so the run is not exactly the uninterrupted one. For an exact resume, return torchdata's "
    "StatefulDataLoader from train_dataloader (or build the data module on hydralight.data.InMemoryDataModule)."
)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class ResumeState(Callback):
    """torch (CPU and CUDA), numpy and python RNG states in the checkpoint, as tensors and lists only (plain
    containers keep `torch.load(weights_only=True)` working); the loader's saved position dropped at an epoch's end.

    RNGs: without them a resumed run replays the first epoch's dropout masks. They go into the checkpoint through
    `state_dict` and come back in `load_state_dict`, which Lightning calls before it builds the resumed train
    iterator. Building it may draw from them (a loader without its own generator seeds its workers and its shuffle
    from the global one), which the uninterrupted run did there only at an epoch's start: an epoch resumed from its
    middle gets the saved states again once its iterator is built (`on_train_start`), so its next batch's dropout
    masks are the uninterrupted run's.

    Loader position: Lightning restores it only into a loader it builds after the checkpoint is read; one built
    earlier (for `trainer.estimated_stepping_batches`) is built again at `on_train_start`. Lightning saves a
    stateful loader's position (torchdata's StatefulDataLoader) in every
    checkpoint and restores it on resume, also from a checkpoint written at an epoch's end. A loader that was cut
    short there (`trainer.limit_train_batches`, or an epoch shorter than the loader) would then go on with the old
    epoch's batches, where the uninterrupted run starts the next epoch afresh: so a checkpoint written once the
    epoch's batches are all done keeps no position.
    """

    def __init__(self) -> None:
        self._loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        version, mt_state, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gauss],
            "python": [version, list(mt_state), gauss],
        }

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        epoch_loop = trainer.fit_loop.epoch_loop
        if epoch_loop.batch_progress.current.completed >= trainer.num_training_batches:
            checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).pop("combined_loader", None)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict
        self._restore(state_dict)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        fit_loop = trainer.fit_loop
        if loader_states_to_load(fit_loop) and train_loader_built(fit_loop):
            # The train loader was built before the checkpoint was restored (`trainer.estimated_stepping_batches`
            # in configure_optimizers builds it, for a schedule's length), so Lightning, which restores a loader's
            # position only when it builds the loader, never would: the epoch would restart from its first batch.
            forget_train_loader(fit_loop)
            fit_loop.setup_data()  # built again, now with the saved position (Lightning's own path)
        if self._loaded is not None and fit_loop.restarted_mid_epoch:
            self._restore(self._loaded)
            if not hasattr(trainer.train_dataloader, "state_dict"):
                rank_zero_warn(NOT_RESUMABLE.format(loader=type(trainer.train_dataloader).__name__))
        self._loaded = None

    @staticmethod
    def _restore(state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        kind, keys, pos, has_gauss, cached_gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gauss))
        version, mt_state, gauss = state_dict["python"]
        random.setstate((version, tuple(mt_state), gauss))


class Preemption(Callback):
    """Lightning already turns SIGTERM into a clean stop at the next batch on every rank; this adds the checkpoint.

    SIGUSR1 is forwarded as SIGTERM, unless Lightning's SLURM auto-requeue owns it (one requeue mechanism only).
    After the stop, `saved` is the checkpoint path; the train task turns it into exit code 75.
    """

    def __init__(self) -> None:
        self.saved: Path | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, lambda *_: os.kill(os.getpid(), signal.SIGTERM))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """A run that continued from its preemption checkpoint and then finished: that file is spent (every later
        checkpoint holds more), so it leaves checkpoints/ rather than stay as a stale candidate for resume=auto."""
        stale = checkpoint_dir(trainer) / PREEMPTED_CHECKPOINT
        if trainer.is_global_zero and stale.is_file():
            trainer.strategy.remove_checkpoint(stale)  # through the CheckpointIO: after any write still in flight
            rank_zero_info(f"Removed {stale}: the run it continued has finished")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        path = checkpoint_dir(trainer) / PREEMPTED_CHECKPOINT
        trainer.save_checkpoint(path)  # collective under DDP: every rank got the SIGTERM broadcast
        self.saved = path
        rank_zero_info(f"Preempted at step {trainer.global_step}: saved {path}")


def class_path(cls: type) -> str:
    """The dotted path `hydra.utils.get_class` imports `cls` from."""
    return f"{cls.__module__}.{cls.__qualname__}"


class TaskRecord(Callback):
    """`checkpoint["task"] = {"module": <LightningModule class path>, "data": <the resolved data config>}`.

    Plain containers only, so `torch.load(path, weights_only=True)` still reads the checkpoint. Lightning skips
    callbacks when it saves a weights-only checkpoint (`save_weights_only=true`): those are rebuilt from the run's
    `.hydra/config.yaml` instead.
    """

    def __init__(self, data: Mapping[str, Any] | None) -> None:
        self.data = data  # resolved at each save: a value the run settled later (tune=batch_size) is recorded too

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        data = self.data
        if isinstance(data, DictConfig):
            data = OmegaConf.to_container(data, resolve=True, enum_to_str=True)
        checkpoint[TASK_KEY] = {"module": class_path(type(pl_module)), "data": copy.deepcopy(data)}


@contextlib.contextmanager
def stops_cleanly(what_is_saved: Callable[[], str]) -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP end the run with Preempted (exit 75) whatever it is doing;
    `what_is_saved()` says in the line what the next run of the same command continues from."""

    def stop(signum: int, frame: FrameType | None) -> None:
        if signal.getsignal(signal.SIGTERM) is not stop:  # a Lightning stage: its handler stops at the next batch
            if signum != signal.SIGTERM:
                os.kill(os.getpid(), signal.SIGTERM)  # Lightning listens for SIGTERM only
            return
        raise Preempted(f"stopped by {signal.Signals(signum).name}. {what_is_saved()}")

    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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


class SeedTheTest(Callback):
    """Seeds every random generator when a test loop starts, after Lightning has restored the tested checkpoint
    (whose saved RNG states ResumeState puts back): the test after training and eval.py's test of the same checkpoint
    then draw the same numbers, so a module whose test draws random numbers reproduces its metric."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from lightning.pytorch import seed_everything

        seed_everything(self.seed, workers=True, verbose=False)
