"""The callbacks the train task adds to every run, whatever its callbacks config says: what a checkpoint needs, besides
what Lightning saves, to continue the run exactly and to rebuild its task, and the checkpoint a preemption writes.

- `ResumeState`: every random number generator, and the train loader's position only where an epoch is cut in two.
- `Preemption`: on SIGTERM (or SIGUSR1, SLURM's warning signal) save a checkpoint, then stop with exit code 75.
- `TaskRecord`: which task wrote the checkpoint, so eval, predict and export rebuild that task from it.
"""

import copy
import os
import random
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from hydralight.compat.lightning import forget_train_loader, loader_states_to_load, train_loader_built
from hydralight.core.runs.checkpoints import TASK_KEY, checkpoint_dir

PREEMPTED_CHECKPOINT = "preempted.ckpt"


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
