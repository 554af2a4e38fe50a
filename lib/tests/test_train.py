"""The train and eval tasks end to end: what a user runs, on the testing project's configs."""

import json
from pathlib import Path

import pytest
import torch

from hydralight.core.evaluate import evaluate
from hydralight.core.train import train
from hydralight.testing import QUICK, assert_ok, run_cli


def read_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def assert_weights_only_loadable(run_dir: Path) -> list[Path]:
    """Every checkpoint of the run loads with torch.load(weights_only=True) and has no `=` in its name."""
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert checkpoints, f"no checkpoints in {run_dir}"
    for path in checkpoints:
        assert "=" not in path.name
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        assert checkpoint["state_dict"]
    return checkpoints


def test_fast_dev_run_trains_and_tests(make_cfg):
    """debug=fdr runs one batch of fit and test through the real train function and writes metrics.json."""
    cfg = make_cfg("debug=fdr", quick=False)
    train(cfg)
    metrics = read_metrics(Path(cfg.paths.output_dir))
    assert "test/loss" in metrics


def test_train_writes_the_run_contract_and_eval_reproduces_it(make_cfg, tmp_path):
    """A run leaves metrics.json (val/loss_best, test/loss) and last.ckpt; eval of the best checkpoint reproduces
    the test loss training reported."""
    cfg = make_cfg("trainer.max_epochs=2")
    returned = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    metrics = read_metrics(run_dir)
    assert {"val/loss_best", "test/loss"} <= metrics.keys()
    assert all(isinstance(value, float) for value in metrics.values())
    assert returned == pytest.approx(metrics["val/loss_best"])  # the sweep metric (optimized_metric)
    checkpoints = assert_weights_only_loadable(run_dir)
    assert run_dir / "checkpoints" / "last.ckpt" in checkpoints
    best = next(path for path in checkpoints if path.name != "last.ckpt")

    eval_cfg = make_cfg(f"ckpt_path={best}", config_name="eval")
    eval_cfg.paths.output_dir = str(tmp_path / "eval")
    evaluated = evaluate(eval_cfg)
    assert evaluated["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-6)
    assert read_metrics(tmp_path / "eval")["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-6)


def test_eval_rebuilds_the_checkpoints_own_architecture(make_cfg, tmp_path):
    """A checkpoint of a wider net evaluates with the default eval config (whose net has 8 hidden units): the net
    comes from the checkpoint, not the config."""
    cfg = make_cfg("model.net.hidden=24", "test=false")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["state_dict"]["net.0.weight"].shape == (24, 4)
    eval_cfg = make_cfg(f"ckpt_path={last}", config_name="eval")
    assert eval_cfg.model.net.hidden == 8
    eval_cfg.paths.output_dir = str(tmp_path / "eval")
    assert "test/loss" in evaluate(eval_cfg)


def test_resume_from_explicit_checkpoint_continues_training(make_cfg, tmp_path):
    """ckpt_path=<last.ckpt> with more epochs continues from the saved epoch instead of starting over."""
    first = make_cfg("trainer.max_epochs=1", "test=false")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    second = make_cfg("trainer.max_epochs=2", f"ckpt_path={last}", "test=false")
    second.paths.output_dir = str(tmp_path / "resumed")
    train(second)
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1
    assert resumed["global_step"] == 2 * torch.load(last, weights_only=True)["global_step"]


def test_runs_started_together_never_share_a_dir(tmp_path):
    """Two runs started in the same second get two run dirs (outputs/<task>/runs/<time>[_N])."""
    from hydralight.core.resolvers import unique_dir

    base = str(tmp_path / "runs" / "2026-01-01_00-00-00")
    claimed = {unique_dir(base) for _ in range(3)}
    assert len(claimed) == 3 and all(Path(path).is_dir() for path in claimed)


@pytest.mark.slow
def test_ddp_spawn_keeps_fit_metrics_and_learning_curves(make_cfg, tmp_path):
    """strategy=ddp_spawn runs fit and test in separate spawned processes; metrics.json and metrics.csv keep both."""
    train(make_cfg("strategy=ddp_spawn", "trainer.devices=2", "logger=csv"))
    run_dir = tmp_path / "run"
    assert {"val/loss_best", "test/loss"} <= read_metrics(run_dir).keys()
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/loss", "test/loss"} <= set(header)


def test_print_config_shows_the_resolved_tree_and_the_run_ends_with_a_metrics_table(make_cfg, capsys):
    """print_config=true prints the resolved config as a tree first; every run ends with its metrics as a table."""
    cfg = make_cfg("debug=fdr", "print_config=true", quick=False)
    train(cfg)
    out = capsys.readouterr().out
    assert out.index("config") < out.index("Final metrics")
    assert "hydralight.testing.RegressionData" in out and "${" not in out  # resolved
    assert "test/loss" in out[out.index("Final metrics") :]


def test_eval_reproduces_a_test_that_draws_random_numbers(project):
    """A module whose test draws random numbers (a GAN's noise): the test after training and eval.py start the test
    loop from the same seed, the run's, so eval reproduces the test metric exactly, also for a run with its own
    seed (issue 27, item 7)."""
    args = ("model=noisy_test", "seed=7", "run_name=noisy", *QUICK)
    assert_ok(run_cli("train.py", *args, cwd=project))
    run_dir = project / "outputs" / "train" / "runs" / "noisy"
    trained = json.loads((run_dir / "metrics.json").read_text())
    best = next((run_dir / "checkpoints").glob("epoch*.ckpt"))
    assert_ok(run_cli("eval.py", f"ckpt_path={best}", "hydra.run.dir=evaluated", *QUICK, cwd=project))
    evaluated = json.loads((project / "evaluated" / "metrics.json").read_text())
    assert evaluated["test/loss"] == trained["test/loss"]
