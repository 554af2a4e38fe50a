"""Numeric specifications of the training switches: clipping, DDP through the CLI and precision do what they promise.
(Accumulation, and DDP equality for any module, are in hydralight.testing.contract, which every task runs.)

Each test trains hydralight.testing's regression through the real `train()` (or the real CLI for DDP) and reads the
result from where a user would: the checkpoints (loaded weights-only), metrics.json, or a probe callback added to the
config (hydralight.testing.numerics).
"""

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from hydralight.core.train import train
from hydralight.testing import assert_ok, compose, run_cli
from hydralight.testing.numerics import load_last, train_with_probe

# A setting where "same data, same update" is exact: the regression's plain SGD, no batch-norm statistics, no dropout
# masks, fp32, a fixed seed, and no test pass (it does not change the weights and costs time). Batches of 8: 4
# optimizer steps an epoch.
EXACT = ("precision=32-true", "seed=7", "logger=none", "test=false", "data.batch_size=8", "trainer.limit_val_batches=1")
STEPS = 5  # optimizer steps of the DDP exactness run
WEIGHT_TOL = 1e-6


def net_weights(checkpoint: dict[str, Any]) -> dict[str, Tensor]:
    weights = {name: t for name, t in checkpoint["state_dict"].items() if name.startswith("net.")}
    assert weights, f"no net.* tensors in the checkpoint: {sorted(checkpoint['state_dict'])}"
    return weights


def max_abs_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest |a - b| over every net tensor of two checkpoints (which must hold the same names and shapes)."""
    wa, wb = net_weights(a), net_weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[name].double() - wb[name].double()).abs().max().item() for name in wa)


def test_gradient_clipping_by_norm_bounds_the_norm_the_optimizer_uses(make_cfg):
    """gradient_clip_val=0.01 (norm): at every optimizer step the total gradient 2-norm is <= 0.01, down from more."""
    clip = 0.01
    probe = train_with_probe(make_cfg(*EXACT, f"gradient_clip_val={clip}", "gradient_clip_algorithm=norm"))
    assert len(probe.at_step) == len(probe.before_clip) == 4
    for (unclipped, _), (clipped, _) in zip(probe.before_clip, probe.at_step, strict=True):
        assert unclipped > clip  # clipping had work to do ...
        assert clipped <= clip * (1 + 1e-5)  # ... and did it: the update used a norm of at most 0.01 ...
        assert clipped == pytest.approx(clip, rel=1e-3)  # ... by rescaling to 0.01, not by zeroing


def test_gradient_clipping_by_value_bounds_every_element(make_cfg):
    """gradient_clip_val=0.001 (value): at every optimizer step every gradient element has |g| <= 0.001."""
    clip = 0.001
    probe = train_with_probe(make_cfg(*EXACT, f"gradient_clip_val={clip}", "gradient_clip_algorithm=value"))
    assert len(probe.at_step) == 4
    assert all(max_abs > clip for _, max_abs in probe.before_clip)  # there was something to clip
    assert all(max_abs <= clip * (1 + 1e-6) for _, max_abs in probe.at_step)


def test_without_clipping_the_optimizer_sees_the_raw_gradients(make_cfg):
    """gradient_clip_val=null: the probe's step-time gradients equal the unclipped ones and exceed the thresholds."""
    probe = train_with_probe(make_cfg(*EXACT, "gradient_clip_val=null"))
    assert len(probe.at_step) == 4
    assert probe.at_step == probe.before_clip  # nothing touched the gradients between the two
    assert all(norm > 0.01 and max_abs > 0.001 for norm, max_abs in probe.at_step)


@pytest.mark.slow
def test_ddp_two_cpu_processes_equal_one_process_of_twice_the_batch(project, tmp_path):
    """strategy=ddp, 2 CPU ranks at batch 16, data.shuffle=false (the library's datamodule; through the CLI:
    Lightning re-launches it for rank 1): the weights of one process at batch 32 (in-process), to 1e-6."""
    common = (
        *EXACT,
        "data=splits",
        "data.n_samples=480",  # 160 training samples: 5 steps of 32
        "data.shuffle=false",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={STEPS}",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
        "~callbacks.learning_rate_monitor",
    )
    runs = tmp_path / "runs"
    ddp_dir, single_dir = runs / "ddp", runs / "single"
    assert_ok(run_cli("train.py", *common, "strategy=ddp", "trainer.devices=2", "data.batch_size=16",
                      f"hydra.run.dir={ddp_dir}", cwd=project))  # fmt: skip
    train(compose("train", single_dir, (*common, "trainer.devices=1", "data.batch_size=32")))  # no process

    ddp, single = load_last(ddp_dir), load_last(single_dir)
    assert ddp["global_step"] == single["global_step"] == STEPS
    assert max_abs_diff(ddp, single) <= WEIGHT_TOL
    # One run, one dir: rank 1 wrote into the same run dir (none of its own) and rank 0 alone wrote metrics.json.
    assert [p.relative_to(ddp_dir) for p in ddp_dir.rglob("metrics.json")] == [Path("metrics.json")]
    assert sorted(p.name for p in runs.iterdir()) == ["ddp", "single"]
    assert not (project / "outputs").exists()


def test_precision_64_true_trains_in_float64(make_cfg, tmp_path):
    """precision=64-true: the net computes in float64, its checkpointed weights are float64, the metrics finite."""
    probe = train_with_probe(make_cfg("precision=64-true", "logger=none", "test=false"))
    assert probe.precision == "64-true"
    assert probe.output_dtypes == {torch.float64}
    floating = {n: t.dtype for n, t in net_weights(load_last(tmp_path / "run")).items() if t.is_floating_point()}
    assert floating and set(floating.values()) == {torch.float64}, floating
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics and all(math.isfinite(value) for value in metrics.values())


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.filterwarnings("ignore:Precision bf16-mixed is not supported by the model summary:UserWarning")
def test_mixed_precision_on_cpu_runs_as_bf16_autocast(make_cfg, tmp_path, caplog, precision):
    """precision=bf16-mixed, and 16-mixed (which becomes bf16-mixed on CPU, saying so), train with bfloat16
    autocast over float32 weights and give finite metrics."""
    probe = train_with_probe(make_cfg(f"precision={precision}", "logger=none"))
    assert probe.precision == "bf16-mixed"
    assert probe.output_dtypes == {torch.bfloat16}  # the net's Linear layers really ran under bf16 autocast
    weights = net_weights(load_last(tmp_path / "run"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}  # mixed: fp32 master
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"val/loss_best", "test/loss"} <= metrics.keys()
    assert all(math.isfinite(value) for value in metrics.values())
    said_so = any("uses precision=bf16-mixed" in record.getMessage() for record in caplog.records)
    assert said_so == (precision == "16-mixed")
