"""On SIGTERM (or SIGUSR1, SLURM's warning signal) save a checkpoint, then stop with exit code 75."""

import os
import signal
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from hydralight.core.runs.checkpoints import checkpoint_dir

PREEMPTED_CHECKPOINT = "preempted.ckpt"


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
