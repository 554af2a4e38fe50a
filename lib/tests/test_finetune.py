"""Fine-tuning, on hydralight.testing's regression of blocks (SGD with momentum and weight decay): `init_from=<ckpt>`
starts a new run from a checkpoint's weights alone (strict by default, `init_from_strict=false` loads what fits), and
`callbacks=finetune` freezes named submodules until an epoch.

In-process through the real `train()` on the composed configs, tiny runs of 4 steps an epoch.
"""

from pathlib import Path
from typing import ClassVar

import pytest
import torch
from lightning.pytorch import Callback
from omegaconf import DictConfig, open_dict

from hydralight.core.errors import UserError
from hydralight.core.train import train
from hydralight.testing.numerics import load_last

# An optimizer with a state (momentum) and weight decay; batches of 8: 4 steps an epoch.
TASK = ("model=blocks", "model.momentum=0.9", "model.weight_decay=0.01", "data.batch_size=8", "logger=none")
FROZEN = "net.blocks.0"  # a submodule with weights, not the output head


class StartProbe(Callback):
    """The weights and the optimizer state as training starts, and the `watched` module's weights after each epoch."""

    instances: ClassVar[list["StartProbe"]] = []

    def __init__(self, watched: str | None = None) -> None:
        self.watched = watched
        self.start: dict[str, torch.Tensor] = {}
        self.optimizer_state: dict = {}
        self.after_epoch: list[dict[str, torch.Tensor]] = []
        StartProbe.instances.append(self)

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {key: value.clone() for key, value in pl_module.state_dict().items()}
        self.optimizer_state = trainer.optimizers[0].state_dict()["state"]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.watched:
            module = pl_module.get_submodule(self.watched)
            self.after_epoch.append({key: value.clone() for key, value in module.state_dict().items()})


def train_probed(cfg: DictConfig, watched: str | None = None) -> StartProbe:
    """The real train() with a StartProbe among the config's callbacks, as a user's callback would be."""
    StartProbe.instances.clear()
    with open_dict(cfg):
        cfg.callbacks.start_probe = {"_target_": f"{__name__}.StartProbe", "watched": watched}
    train(cfg)
    (probe,) = StartProbe.instances
    return probe


def base_checkpoint(make_cfg, tmp_path: Path) -> Path:
    """A 1-epoch run in its own dir; its last.ckpt."""
    cfg = make_cfg(*TASK, "test=false")
    cfg.paths.output_dir = str(tmp_path / "base")
    train(cfg)
    return tmp_path / "base" / "checkpoints" / "last.ckpt"


def test_init_from_starts_a_new_run_from_the_weights_alone(make_cfg, tmp_path):
    """The new run trains from exactly the checkpoint's weights, with an empty optimizer state, from epoch 0 and step
    0 (its last.ckpt after one epoch is at step 4, not 8), in its own run dir."""
    ckpt = base_checkpoint(make_cfg, tmp_path)
    probe = train_probed(make_cfg(*TASK, "test=false", f"init_from={ckpt}", "seed=7"))
    saved = torch.load(ckpt, weights_only=True)
    assert saved["optimizer_states"][0]["state"]  # the checkpoint has momentum buffers to leave behind
    assert probe.start.keys() == saved["state_dict"].keys()
    assert all(torch.equal(probe.start[key], value) for key, value in saved["state_dict"].items())
    assert probe.optimizer_state == {}  # a fresh optimizer: no momentum carried over
    last = load_last(tmp_path / "run")
    assert (last["epoch"], last["global_step"]) == (0, saved["global_step"])


def test_a_checkpoint_of_another_shape_is_refused_naming_the_tensors_or_loaded_where_it_fits(make_cfg, tmp_path):
    """Strict: one line naming the tensors of other shapes with both shapes. init_from_strict=false: the tensors that
    fit are loaded, the others keep the new model's initialization."""
    ckpt = base_checkpoint(make_cfg, tmp_path)
    wider = (*TASK, "test=false", f"init_from={ckpt}", "model.net.hidden=16")
    shapes = r"net\.blocks\.0\.0\.bias \(8,\) -> \(16,\), net\.blocks\.0\.0\.weight \(8, 4\) -> \(16, 4\)"
    with pytest.raises(
        UserError, match=rf"does not fit BlockRegression \(other shapes: {shapes}.*init_from_strict=false"
    ):
        train(make_cfg(*wider))
    probe = train_probed(make_cfg(*wider, "init_from_strict=false"))
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    fits = [key for key, value in saved.items() if probe.start[key].shape == value.shape]
    assert "net.head.bias" in fits and all(torch.equal(probe.start[key], saved[key]) for key in fits)
    assert any(probe.start[key].shape != value.shape for key, value in saved.items())


def test_frozen_submodule_stays_bitwise_until_its_epoch_then_trains(make_cfg, tmp_path):
    """callbacks=finetune with unfreeze_at_epoch=1: the named submodule is unchanged by epoch 0's steps (its weight
    decay included) while the rest trains, and changes in epoch 1."""
    name = FROZEN  # net.blocks.0
    cfg = make_cfg(*TASK, "test=false", "trainer.max_epochs=2", "callbacks=finetune",
                   f"callbacks.freeze.modules=[{name}]", "callbacks.freeze.unfreeze_at_epoch=1")  # fmt: skip
    probe = train_probed(cfg, watched=name)
    start = {key[len(name) + 1 :]: value for key, value in probe.start.items() if key.startswith(f"{name}.")}
    assert start, f"{name} holds no weights"
    first, second = probe.after_epoch
    assert all(torch.equal(first[key], start[key]) for key in start), "the frozen module changed in epoch 0"
    assert any(not torch.equal(second[key], start[key]) for key in start), "the module did not train after epoch 1"
    trained = load_last(tmp_path / "run")["state_dict"]
    others = [key for key in probe.start if not key.startswith(name) and probe.start[key].is_floating_point()]
    assert any(not torch.equal(trained[key], probe.start[key]) for key in others)


def test_freezing_an_unknown_submodule_names_the_ones_there(make_cfg):
    with pytest.raises(UserError, match=r"callbacks\.freeze\.modules: 'net\.nope' is no submodule of BlockRegression\. "
                       r"Its submodules include: net, net\.blocks, net\.head"):  # fmt: skip
        train(make_cfg(*TASK, "callbacks=finetune", "callbacks.freeze.modules=[net.nope]"))
