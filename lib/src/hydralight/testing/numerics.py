"""Reading what a training run did, for tests of any task: a probe of the gradients the optimizer steps with (and of
the precision the net computes in), the run's last checkpoint and metrics.json, and weights compared to a tolerance."""

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, open_dict
from torch import Tensor


class GradientProbe(Callback):
    """Records, per optimizer step, the gradients' total 2-norm and largest |element| twice: in
    `on_before_optimizer_step` (before Lightning clips) and inside `optimizer.step` after the closure, i.e. exactly
    what the update uses. Also records the trainer's precision and the dtype of the outputs of the module's `net`."""

    instances: ClassVar[list["GradientProbe"]] = []

    def __init__(self) -> None:
        self.before_clip: list[tuple[float, float]] = []
        self.at_step: list[tuple[float, float]] = []
        self.precision: str | None = None
        self.output_dtypes: set[torch.dtype] = set()
        GradientProbe.instances.append(self)

    @staticmethod
    def measure(module: LightningModule) -> tuple[float, float]:
        grads = [p.grad.detach().double() for p in module.parameters() if p.grad is not None]
        assert grads, "no gradients at the optimizer step"
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
        return norm, max(g.abs().max().item() for g in grads)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.precision = str(trainer.precision)
        pl_module.net.register_forward_hook(lambda _module, _inputs, output: self.output_dtypes.add(output.dtype))
        optimizer = trainer.optimizers[0]
        real_step = optimizer.step

        # Lightning calls optimizer.step(closure); the closure runs forward, backward, then clipping. Recording after
        # it returns and before the real step's update sees the gradients the parameters are actually moved by.
        def step(closure: Any = None, **kwargs: Any) -> Any:
            def recording_closure() -> Any:
                loss = closure()
                self.at_step.append(self.measure(pl_module))
                return loss

            return real_step(recording_closure if closure is not None else None, **kwargs)

        optimizer.step = step

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        self.before_clip.append(self.measure(pl_module))


def train_with_probe(cfg: DictConfig, probe: type[GradientProbe] = GradientProbe) -> GradientProbe:
    """The real train() with a `probe` added to the config's callbacks, as a user's callback would be; the probe."""
    from hydralight.core.train import train

    GradientProbe.instances.clear()
    with open_dict(cfg):
        cfg.callbacks.gradient_probe = {"_target_": f"{probe.__module__}.{probe.__qualname__}"}
    train(cfg)
    (instance,) = GradientProbe.instances
    return instance


def load_last(run_dir: str | Path) -> dict[str, Any]:
    """A run dir's checkpoints/last.ckpt, loaded weights-only on the CPU."""
    return torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")


def read_metrics(run_dir: str | Path) -> dict[str, float]:
    """A run dir's metrics.json, every value finite."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    assert metrics and all(math.isfinite(value) for value in metrics.values()), metrics
    return metrics


def assert_close_weights(got: dict[str, Tensor], want: dict[str, Tensor], rtol: float) -> None:
    """The same names, and each tensor within `rtol` of `want`'s, relative to the largest |element| of `want`'s."""
    assert got.keys() == want.keys()
    for name, value in got.items():
        scale = want[name].abs().max().clamp_min(1e-12)
        difference = float((value.double() - want[name].double()).abs().max() / scale)
        assert difference <= rtol, f"{name}: {difference:.3g} of its largest value apart (rtol {rtol})"
