"""Manual optimization (`automatic_optimization = False`: a GAN, any module stepping its own optimizers) is a task
shape the machinery trains as typed; the switches Lightning applies only to automatic optimization stop before
training in one line that says what the module does instead (issue 27, item 1)."""

import json
from pathlib import Path

import pytest

from hydralight.core.errors import UserError
from hydralight.core.train import train


def test_a_module_stepping_its_own_optimizers_trains_and_tests(make_cfg):
    cfg = make_cfg("model=two_step", "trainer.max_epochs=3")
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert "test/loss" in json.dumps(metrics)


@pytest.mark.parametrize(
    ("switch", "says"),
    [
        (("gradient_clip_val=1.0",), r"gradient_clip_val=1.0: TwoStepRegression steps its own .*self.clip_gradients"),
        (("accumulate_grad_batches=2",), r"accumulate_grad_batches=2: .*every N batches in its training_step"),
        (("tune=lr_find",), r"tune=lr_find: TwoStepRegression steps its own optimizers"),
    ],
    ids=["clip", "accumulate", "lr_find"],
)
def test_switches_lightning_cannot_apply_to_it_are_one_line_before_training(make_cfg, switch, says):
    cfg = make_cfg("model=two_step", *switch)
    with pytest.raises(UserError, match=says):
        train(cfg)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))
