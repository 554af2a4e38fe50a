"""Tools a user expects: tune=lr_find / tune=batch_size before training, and the profilers' reports in the run dir."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from hydralight.core.callbacks.tuning import steepest_descent
from hydralight.core.train import train
from hydralight.testing import QUICK, assert_ok, run_cli


def test_lr_find_trains_with_the_suggested_learning_rate(make_cfg):
    """tune=lr_find writes lr_find.json, and the run's optimizer and saved hparams carry the suggested rate."""
    cfg = make_cfg("tune=lr_find", "callbacks.lr_find.num_training_steps=30", "test=false")
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    report = json.loads((run_dir / "lr_find.json").read_text())
    assert len(report["lr"]) == len(report["loss"]) == 30  # more steps than the 2-batch epoch: max_epochs is lifted
    suggestion = report["suggestion"]
    assert 1e-6 < suggestion < 1.0
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["hyper_parameters"]["lr"] == pytest.approx(suggestion)  # the module's own `lr` argument
    assert [group["lr"] for group in last["optimizer_states"][0]["param_groups"]] == [pytest.approx(suggestion)]


def test_lr_find_suggests_the_steepest_fall_per_decade():
    """The suggestion is where the loss falls fastest per decade of learning rate, not per unit of it."""
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    # Flat up to 1e-3, then a steep fall around 1e-2, then a plateau: the answer lies in the fall.
    losses = [2.3 - 1.5 / (1 + (1e-2 / lr) ** 4) for lr in lrs]
    assert 3e-3 < steepest_descent({"lr": lrs, "loss": losses}) < 3e-2
    assert steepest_descent({"lr": lrs[:5], "loss": losses[:5]}) is None  # too few points to tell


def test_batch_size_finder_grows_the_batch_up_to_the_training_split_and_no_further(project):
    """tune=batch_size doubles data.batch_size while it fits (on CPU, 12 -> 24 -> 48: Lightning's doubling stops only
    past the 32-sample training split), then trains with the split's size, and the run's config says so: a value the
    next run (a resume, eval) accepts."""
    tune = ("tune=batch_size", "data.batch_size=12", "callbacks.batch_size_finder.steps_per_trial=1")
    result = run_cli("train.py", *tune, "test=false", "run_name=tuned", *QUICK, cwd=project)
    assert_ok(result)
    run_dir = project / "outputs" / "train" / "runs" / "tuned"
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").data.batch_size == 32  # the regression's 96 in thirds
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1


@pytest.mark.parametrize(
    ("option", "reports"),
    [
        ("profiler", ["fit-profile.txt", "test-profile.txt"]),
        ("profiler_advanced", ["fit-profile_advanced.txt", "test-profile_advanced.txt"]),
        ("profiler_pytorch", ["fit-profile_pytorch.txt", "test-profile_pytorch.txt", "*.pt.trace.json"]),
    ],
    ids=["simple", "advanced", "pytorch"],
)
def test_profiler_options_write_their_reports_into_the_run_dir(make_cfg, option, reports):
    """debug=profiler / profiler_advanced / profiler_pytorch leave their reports (and the Chrome trace) in the run dir,
    like every other log of the run."""
    cfg = make_cfg(f"debug={option}", "logger=none")
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    for pattern in reports:
        found = list(run_dir.glob(pattern))
        assert found and all(path.stat().st_size > 0 for path in found), f"{pattern} not in {run_dir}"
