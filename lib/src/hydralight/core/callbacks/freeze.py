"""Fine-tuning: named submodules frozen for the first epochs (or for good), then trained with the rest."""

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from hydralight.compat.lightning import ddp_kwargs
from hydralight.core.errors import UserError


class Freeze(Callback):
    """Freezes the submodules named in `modules` (e.g. `net.layers.1`, `net.blocks`) before each training epoch
    below `unfreeze_at_epoch`, and trains them from that epoch on (null: frozen for the whole run); `train_bn`: their
    BatchNorm layers still learn (Lightning's default).

    Frozen parameters get no gradient, so the optimizer leaves them exactly as they are (its update skips a
    parameter without one) and their weight decay with them. The state follows the epoch alone, so a resumed run
    freezes what an uninterrupted one would. Lightning's BaseFinetuning does the freezing itself."""

    def __init__(self, modules: list[str], unfreeze_at_epoch: int | None = None, train_bn: bool = True) -> None:
        if isinstance(modules, str):
            modules = [modules]
        if not modules:
            raise ValueError("modules must name at least one submodule, e.g. modules=[net.layers.1]")
        if unfreeze_at_epoch is not None and (isinstance(unfreeze_at_epoch, bool) or unfreeze_at_epoch < 1):
            raise ValueError(f"unfreeze_at_epoch must be an epoch >= 1 or null (never), got {unfreeze_at_epoch!r}")
        self.names = list(modules)
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.train_bn = train_bn

    def submodules(self, pl_module: LightningModule) -> list[nn.Module]:
        found = []
        for name in self.names:
            try:
                found.append(pl_module.get_submodule(name))
            except AttributeError:
                known = [n for n, _ in pl_module.named_modules() if n and n.count(".") < 2]
                raise UserError(
                    f"callbacks.freeze.modules: {name!r} is no submodule of {type(pl_module).__name__}. "
                    f"Its submodules include: {', '.join(known[:20])}."
                ) from None
        return found

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.submodules(pl_module)  # a wrong name stops the run before anything trains
        # DDP wraps the model after this hook and expects a gradient for every parameter in every step, unless told
        # some may have none; it then also all-reduces them once they are unfrozen.
        if isinstance(trainer.strategy, DDPStrategy) and not ddp_kwargs(trainer.strategy).get("find_unused_parameters"):
            raise UserError(
                "callbacks.freeze under strategy=ddp: frozen parameters get no gradient, which DDP refuses unless "
                "told so. Add strategy.find_unused_parameters=true."
            )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        modules = self.submodules(pl_module)
        if self.unfreeze_at_epoch is None or trainer.current_epoch < self.unfreeze_at_epoch:
            BaseFinetuning.freeze(modules, train_bn=self.train_bn)
        else:
            BaseFinetuning.make_trainable(modules)
