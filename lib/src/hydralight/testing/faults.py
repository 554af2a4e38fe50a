"""Callbacks that make a run fail at a chosen optimizer step the ways real runs fail: a NaN (a data bug, an
overflow), a crash, a cluster's preemption (SIGTERM), a kill -9. A test adds one to any task's run, in-process or
through the CLI: `+callbacks.fault._target_=hydralight.testing.faults.CrashAt +callbacks.fault.step=7`."""

import os
import signal
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class InjectNaN(Callback):
    """Fills the input batch with NaN at one training step."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.at_step:
            batch[0].fill_(float("nan"))


class CrashAt(Callback):
    """Raises `RuntimeError("crash at step <step>")` just before step `step` (whose checkpoints are written by then)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"crash at step {self.step}")


class SigtermAt(Callback):
    """SIGTERM to this process once step `step` is done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class KillAt(Callback):
    """SIGKILL to this process as it reaches `at_step`, unless the run resumed: the same command then finishes."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step
        self.resumed = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.resumed = trainer.global_step > 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.resumed and trainer.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGKILL)


class SigtermWhileTesting(Callback):
    """SIGTERM to this process at the first test batch: a preemption after training, during its test."""

    def on_test_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.test_loop.batch_progress.current.ready == 1:
            os.kill(os.getpid(), signal.SIGTERM)


class AllocationFailsAt(Callback):
    """The CPU allocator's error at step `step`, as a batch too large for the machine's memory raises it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
                "allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)"
            )
