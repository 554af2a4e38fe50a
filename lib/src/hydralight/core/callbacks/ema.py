"""An exponential moving average of the weights: Lightning's EMAWeightAveraging, with what the harness needs."""

import itertools
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class EMA(EMAWeightAveraging):
    """Validation, checkpoints' `state_dict`, and the model after training hold the averaged weights; the training
    weights go into the checkpoint's `current_model_state`, and only a resumed fit reads them back.

    Three things Lightning's callback gets wrong in this harness:
    - Testing after fit (`ckpt_path="best"`) restores callbacks too, and Lightning's `on_load_checkpoint` then loads
      `current_model_state` into the module: the test would score the training weights, not the average that
      validation ranked and `eval.py` scores. Outside fit the checkpoint's `state_dict` is left as it is.
    - A checkpoint saved mid-validation (a preemption) came out with the two sets of weights swapped.
    - The averaged `state_dict` carried the metric states (the best val/acc so far) of the copy made at setup.
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        device: str | None = None,
        use_buffers: bool = True,
    ) -> None:
        """Lightning's arguments, named (no `**kwargs`), so the config checks catch a misspelt or mistyped key."""
        super().__init__(
            device=device,
            use_buffers=use_buffers,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            update_starting_at_epoch=update_starting_at_epoch,
        )
        self._validating = False  # the module holds the average and the AveragedModel the training weights

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_epoch_start(trainer, pl_module)
        self._validating = self._average_model is not None

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)
        self._validating = False

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._average_model is None:
            return
        if self._validating:  # the weights are swapped right now, so Lightning filed each under the other's name
            checkpoint["state_dict"], checkpoint["current_model_state"] = (
                checkpoint["current_model_state"],
                checkpoint["state_dict"],
            )
        # Tied weights have two names: both are averaged, so neither is taken from the module below.
        averaged = {
            name
            for name, _ in itertools.chain(
                pl_module.named_parameters(remove_duplicate=False), pl_module.named_buffers(remove_duplicate=False)
            )
        }
        for name, value in pl_module.state_dict().items():
            if name not in averaged:  # what is not averaged (metric states) is the module's own, in both
                checkpoint["state_dict"][name] = checkpoint["current_model_state"][name] = value
