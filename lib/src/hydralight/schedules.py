"""Learning-rate schedules torch does not ship as one class."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosineLR(LRScheduler):
    """A linear warm-up to the optimizer's lr over `warmup_steps`, then a cosine decay to `min_lr_ratio` x lr at
    `total_steps` (and flat after it): the usual schedule of transformer recipes. Stepped once per optimizer step.

    A class rather than a LambdaLR so that its state (plain numbers) is saved in checkpoints and restored on resume.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        if total_steps < 1 or warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(
                f"WarmupCosineLR needs total_steps >= 1, warmup_steps >= 0 and 0 <= min_lr_ratio <= 1; got "
                f"total_steps={total_steps}, warmup_steps={warmup_steps}, min_lr_ratio={min_lr_ratio}"
            )
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The multiple of the base lr used for optimizer step `step` (counting from 0)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [base_lr * self.factor(self.last_epoch) for base_lr in self.base_lrs]
