"""callbacks=ema: an exponential moving average of the weights (hydralight.core.callbacks.ema.EMA, Lightning's
EMAWeightAveraging) on hydralight.testing's regression of blocks (whose lowest validation loss is a metric state in
the checkpoint, as a project's best-so-far metric is). Validation, the checkpoints' `state_dict`, the test after
training and eval.py all use the average, computed here from the weights after each step; the training weights ride
along in the checkpoint, so a resumed run ends bitwise equal to an uninterrupted one; checkpoints load with
`weights_only=True`."""

import json
import os
import signal
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, open_dict
from test_reliability import assert_identical_training_state
from torch import Tensor

from hydralight.core.errors import Preempted
from hydralight.core.evaluate import evaluate
from hydralight.core.train import train
from hydralight.testing import QUICK, compose
from hydralight.testing.blocks import BlockRegression

# Lightning's note on modules with a configure_model (which the blocks' tensor-parallel plan needs): not sharded here.
pytestmark = pytest.mark.filterwarnings("ignore:You're using the WeightAveraging callback with a model that overrides")
# 4 optimizer steps an epoch (batches of 8): 8 steps, 2 validations. SGD with momentum: an optimizer state to resume.
EMA_RUN = (*QUICK, "model=blocks", "model.momentum=0.9", "data.batch_size=8", "callbacks=ema", "logger=none",
           "trainer.max_epochs=2")  # fmt: skip


def net_weights(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The net's float tensors (weights, biases, batch-norm statistics), cloned: what the average is taken of."""
    return {name: t.detach().clone() for name, t in state.items() if name.startswith("net.") and t.is_floating_point()}


class WeightsProbe(Callback):
    """The training weights after every optimizer step, and the weights each validation (after step N) runs with."""

    instances: ClassVar[list["WeightsProbe"]] = []

    def __init__(self) -> None:
        self.after_step: list[dict[str, Tensor]] = []
        self.in_validation: dict[int, dict[str, Tensor]] = {}
        WeightsProbe.instances.append(self)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self.after_step.append(net_weights(pl_module.state_dict()))

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:  # fmt: skip
        if batch_idx == 0 and not trainer.sanity_checking:
            self.in_validation[trainer.global_step] = net_weights(pl_module.state_dict())


class SigtermInSecondValidation(Callback):
    """SIGTERM (a cluster's preemption) while the second epoch's validation runs, with batches still to go."""

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        if trainer.current_epoch == 1 and batch_idx == 0 and not trainer.sanity_checking:
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None), "Lightning must be handling SIGTERM"
            os.kill(os.getpid(), signal.SIGTERM)


def with_callbacks(cfg: DictConfig, *classes: type[Callback]) -> DictConfig:
    """`cfg` with `classes` added to its callbacks, as a user's callbacks would be (after the configured ones)."""
    with open_dict(cfg):
        for cls in classes:
            cfg.callbacks[cls.__name__] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    return cfg


def train_probed(cfg: DictConfig) -> WeightsProbe:
    WeightsProbe.instances.clear()
    train(with_callbacks(cfg, WeightsProbe))
    (probe,) = WeightsProbe.instances
    return probe


def moving_averages(steps: list[dict[str, Tensor]], decay: float) -> list[dict[str, Tensor]]:
    """The EMA after each step: the first step's weights, then decay * average + (1 - decay) * weights."""
    averages = [steps[0]]
    for weights in steps[1:]:
        averages.append({name: decay * averages[-1][name] + (1 - decay) * weights[name] for name in weights})
    return averages


def assert_weights_close(actual: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], msg=lambda m, name=name: f"{name}: {m}")


def assert_weights_equal(actual: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected)


def assert_weights_differ(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    """The check that an average is not simply the latest weights, which would pass every comparison above."""
    assert max((a[name] - b[name]).abs().max().item() for name in a) > 1e-4


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def best_checkpoint(run_dir: Path) -> Path:
    (best,) = [path for path in (run_dir / "checkpoints").glob("*.ckpt") if path.name != "last.ckpt"]
    return best


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory) -> tuple[Path, WeightsProbe, list[dict[str, Tensor]]]:
    """One 2-epoch EMA run, tested after training: (run dir, probe, the EMA after each step)."""
    run_dir = tmp_path_factory.mktemp("ema") / "run"
    cfg = compose("train", run_dir, EMA_RUN)
    probe = train_probed(cfg)
    return run_dir, probe, moving_averages(probe.after_step, cfg.callbacks.ema.decay)


def test_validation_and_checkpoints_hold_the_moving_average_of_the_weights(ema_run):
    """Each validation runs with the EMA of the weights after every step so far; the best checkpoint and last.ckpt
    hold it as their `state_dict` and the training weights as `current_model_state`."""
    run_dir, probe, averages = ema_run
    assert sorted(probe.in_validation) == [4, 8]  # after each epoch's 4 steps
    for step, weights in probe.in_validation.items():
        assert_weights_close(weights, averages[step - 1])
        assert_weights_differ(weights, probe.after_step[step - 1])

    last = load(run_dir / "checkpoints" / "last.ckpt")
    assert_weights_close(net_weights(last["state_dict"]), averages[-1])
    assert_weights_equal(net_weights(last["current_model_state"]), probe.after_step[-1])
    best = load(best_checkpoint(run_dir))
    assert_weights_close(net_weights(best["state_dict"]), averages[best["global_step"] - 1])
    assert int(best["averaging_state"]["n_averaged"]) == best["global_step"]  # every step went into the average
    # Metric states are the module's own, not the initial ones of the averaged copy.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert best["state_dict"]["val_loss_min.min_value"].item() == pytest.approx(metrics["val/loss_best"])


def test_an_ema_checkpoint_loads_weights_only_into_its_module_class(ema_run):
    """torch.load(weights_only=True) reads an EMA checkpoint, and the task's LightningModule class loads it with
    `weights_only=True` holding the averaged weights (its `state_dict`), not the training weights."""
    run_dir, _, _ = ema_run
    path = best_checkpoint(run_dir)
    checkpoint = load(path)
    model = BlockRegression.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    loaded = model.state_dict()
    assert loaded.keys() == checkpoint["state_dict"].keys()
    assert all(torch.equal(loaded[name], checkpoint["state_dict"][name]) for name in loaded)
    assert_weights_differ(net_weights(loaded), net_weights(checkpoint["current_model_state"]))


def test_eval_of_the_best_ema_checkpoint_reproduces_the_test_after_training(ema_run, tmp_path):
    """The test after training scores the best checkpoint's averaged weights, as eval.py ckpt_path=<it> does
    (Lightning's callback alone would reload the training weights for that test)."""
    run_dir, _, _ = ema_run
    trained = json.loads((run_dir / "metrics.json").read_text())
    cfg = compose("eval", tmp_path / "eval", (*QUICK, "logger=none", f"ckpt_path={best_checkpoint(run_dir)}"))
    evaluated = evaluate(cfg, overrides=[])
    tested = {name: value for name, value in trained.items() if name.startswith("test/")}
    assert tested and evaluated.keys() == tested.keys()
    assert evaluated == pytest.approx(tested, rel=1e-6)


def test_a_resumed_ema_run_ends_bitwise_equal_to_an_uninterrupted_one(tmp_path, caplog):
    """1 epoch, then the same config with max_epochs=2 in the same run dir (resume=auto, from last.ckpt), equals 2
    epochs straight: the averaged and the training weights, the average's count, the optimizer state."""
    overrides = (*EMA_RUN, "test=false")
    train(compose("train", tmp_path / "straight", overrides))
    train(compose("train", tmp_path / "resumed", (*overrides, "trainer.max_epochs=1")))
    caplog.set_level("INFO", logger="hydralight")
    train(compose("train", tmp_path / "resumed", overrides))
    assert f"Resuming from {tmp_path / 'resumed' / 'checkpoints' / 'last.ckpt'}" in caplog.messages

    straight, resumed = (tmp_path / name / "checkpoints" / "last.ckpt" for name in ("straight", "resumed"))
    assert_identical_training_state(straight, resumed)  # the step, `state_dict` (the average), the optimizer
    first, second = load(straight), load(resumed)
    assert first["optimizer_states"][0]["state"]  # momentum: a state to resume
    assert first["current_model_state"].keys() == second["current_model_state"].keys()
    for name, tensor in first["current_model_state"].items():
        assert torch.equal(tensor, second["current_model_state"][name]), name
    assert first["averaging_state"] == second["averaging_state"] == {"n_averaged": torch.tensor(8)}
    assert first["callbacks"]["EMA"] == second["callbacks"]["EMA"] == {"latest_update_step": 8}


def test_a_checkpoint_saved_mid_validation_keeps_the_average_and_the_training_weights_apart(tmp_path):
    """Preempted while validating, when the module holds the average: preempted.ckpt still has the average as
    `state_dict` and the training weights as `current_model_state`, so resuming it trains the right weights."""
    cfg = compose("train", tmp_path / "run", EMA_RUN)
    WeightsProbe.instances.clear()
    with pytest.raises(Preempted):
        train(with_callbacks(cfg, WeightsProbe, SigtermInSecondValidation))
    (probe,) = WeightsProbe.instances
    assert len(probe.after_step) == 8  # stopped in the validation after the last step
    preempted = load(tmp_path / "run" / "checkpoints" / "preempted.ckpt")
    assert_weights_close(net_weights(preempted["state_dict"]),
                         moving_averages(probe.after_step, cfg.callbacks.ema.decay)[-1])  # fmt: skip
    assert_weights_equal(net_weights(preempted["current_model_state"]), probe.after_step[-1])


def test_ema_combines_with_the_other_callbacks_options(make_cfg):
    """callbacks=[early_stopping,ema]: both options on top of the default callbacks, each once."""
    callbacks = make_cfg("callbacks=[early_stopping,ema]").callbacks
    assert {"model_checkpoint", "last_checkpoint", "early_stopping", "ema"} <= callbacks.keys()
