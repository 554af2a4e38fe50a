"""Pruning in an Optuna search: each trial reports its monitored metric after every validation, and stops at the end of
that epoch when the search's pruner (`hydra.sweeper.pruner`) says it is hopeless.

A pruned trial is stopped the way early stopping stops a run (`trainer.should_stop`), not by an exception: it ends its
epoch, writes its last checkpoint, is tested with its best checkpoint and writes metrics.json like any run, and the
sweeper tells the study it was pruned (the summary shows `pruned@<epoch>`). Under DDP only rank 0 reports and asks;
its answer is broadcast, so all ranks stop at the same epoch. Outside a search (a single run, or a DDP rank > 0,
which is a single run of its job) there is no trial: the callback only joins rank 0's broadcast.

Optuna-integration's PyTorchLightningPruningCallback does not fit: it needs the trial object at construction (a
config cannot give it), raises TrialPruned inside validation (no test, no metrics.json), and under DDP needs an
RDB storage and a call after fit.
"""

import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from hydralight.core.console import info


class OptunaPruning(Callback):
    """Reports `monitor` to this job's Optuna trial after each validation and stops the fit when the pruner says so."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.trial: Any = None  # optuna.Trial on rank 0 of a search's job
        self.reported: set[int] = set()  # the epochs reported (validation may run more than once an epoch)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from hydra.core.hydra_config import HydraConfig

        self.trial, self.reported = None, set()
        if trainer.is_global_zero and HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            if (hydra_cfg.get("sweeper") or {}).get("trial") is not None:
                from hydralight.core.sweeps.optuna import job_trial  # imports optuna: only in a search's job

                self.trial = job_trial(hydra_cfg)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = self.report(trainer) if self.trial is not None else False
        if trainer.world_size > 1:
            prune = trainer.strategy.broadcast(prune, src=0)
        if not prune:
            return
        trainer.should_stop = True
        if self.trial is not None:
            from hydralight.core.sweeps.optuna import PRUNED_EPOCH

            self.trial.set_user_attr(PRUNED_EPOCH, trainer.current_epoch)
            info("Optuna trial %d pruned at epoch %d (%s=%s): it stops after this epoch",
                 self.trial.number, trainer.current_epoch, self.monitor,
                 f"{float(trainer.callback_metrics[self.monitor]):.6g}")  # fmt: skip

    def report(self, trainer: Trainer) -> bool:
        """Report this epoch's value (once per epoch; a non-finite one is not reported) and ask the pruner."""
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return False  # not logged this validation: nothing to judge by
        value = float(value)
        step = trainer.current_epoch
        if math.isfinite(value) and step not in self.reported:
            self.trial.report(value, step=step)
            self.reported.add(step)
        return self.trial.should_prune()
