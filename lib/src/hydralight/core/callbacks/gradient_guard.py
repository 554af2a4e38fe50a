"""Stops training at the first non-finite loss or gradient, before it reaches the weights or a checkpoint."""

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from hydralight.core.errors import TrainingDiverged
from hydralight.core.runs.checkpoints import checkpoint_dir, newest_checkpoint


def gradient_norm(grads: list[Tensor]) -> Tensor:
    """The total 2-norm of `grads`: torch's own for plain tensors; for DTensors, which may lie on several device
    meshes (strategy=model_parallel), hydralight.core.gradients', imported only by the runs that shard."""
    if all(type(grad) is Tensor for grad in grads):
        return torch.nn.utils.get_total_norm(grads)
    from hydralight.core.gradients import total_norm

    return total_norm(grads)


class GradientGuard(Callback):
    """Checks the total gradient norm before every optimizer step (and the loss after every batch).

    NaN or inf stops the run with `TrainingDiverged` naming the step and the last good checkpoint, which is still
    on disk untouched. Under fp16 AMP a GradScaler skips steps with inf gradients on purpose, so only the loss is
    checked there. `log_norm=True` also logs `train/grad_norm` (vanishing or exploding gradients).
    """

    def __init__(self, check_finite: bool = True, log_norm: bool = False) -> None:
        self.check_finite = check_finite
        self.log_norm = log_norm

    @staticmethod
    def _diverged(trainer: Trainer, what: str) -> TrainingDiverged:
        from hydralight.core.runs.async_checkpoint import wait_for_checkpoints  # only once a run has diverged

        wait_for_checkpoints(trainer)  # async_checkpoint=true: the newest may still be on its way to disk
        last_good = newest_checkpoint(trainer.default_root_dir, checkpoint_dir(trainer))  # what resume would use
        return TrainingDiverged(
            f"{what} is not finite at step {trainer.global_step} (epoch {trainer.current_epoch}). "
            f"Last good checkpoint: {last_good or 'none (none was written yet)'}. "
            "Try a lower model.optimizer.lr, gradient_clip_val=1.0, or precision=32-true."
        )

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        if not (self.check_finite or self.log_norm):
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = gradient_norm(grads)
        if self.log_norm:
            pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        fp16_scaler = getattr(trainer.precision_plugin, "scaler", None)
        if self.check_finite and fp16_scaler is None and not torch.isfinite(norm):
            raise self._diverged(trainer, f"The gradient norm ({float(norm)})")

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if self.check_finite and isinstance(loss, Tensor) and not torch.isfinite(loss).all():
            raise self._diverged(trainer, f"The training loss ({float(loss)})")
