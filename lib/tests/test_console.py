"""The README promises only what runs (strategy=dp on a CPU, precision=16-true), and the console shows only what a
user can act on: each noise that was once printed has a test here that fails if it comes back."""

import contextlib
import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from hydralight.core.build import build_loggers, build_trainer
from hydralight.core.errors import UserError
from hydralight.core.train import train
from hydralight.testing import compose

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="about a machine without CUDA")

# A default run's console, shortened: the real callbacks (model summary, progress bar) and the final table.
SHORT = ("trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "logger=none")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[Path, str, list[str]]:
    """One short run with the default callbacks, of a module holding metric objects: its run dir, what it printed
    and what it logged."""
    run_dir = tmp_path_factory.mktemp("a-run-dir-whose-path-is-longer-than-the-final-metrics-table") / "run"
    records, root = Records(), logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)  # setLevel, not `.level =`: loggers cache whether INFO is enabled
    root.addHandler(records)
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            train(compose("train", run_dir, (*SHORT, "model=configured_regression")))
    finally:
        root.removeHandler(records)
        root.setLevel(level)
    return run_dir, stdout.getvalue(), records.messages


def test_lightning_says_nothing_the_user_can_do_nothing_about(default_run):
    """No "Trainer already configured with model summary callbacks", no "TPU available: False", no checkpoint path
    repeated after the run's own "Testing <path>"."""
    _, _, messages = default_run
    assert any(message.startswith("Testing ") for message in messages), messages  # the run's own line, once
    for noise in (
        "Trainer already configured with model summary callbacks",
        "TPU available: False",
        "Restoring states from the checkpoint path",
        "Loaded model weights from the checkpoint",
    ):
        assert not [message for message in messages if noise in message], noise


def test_the_model_summary_lists_layers_not_metric_objects(default_run):
    """torchmetrics' Metric objects (and the ModuleDicts holding them) are no layers of the model."""
    _, out, _ = default_run
    assert "net.0" in out  # the summary was printed, a layer of the net in it
    for metric in ("mse.", "MeanSquaredError", "ModuleDict"):  # `mse`, the ModuleDict, and what it holds
        assert metric not in out


def test_the_model_summary_of_a_mixed_precision_run_warns_of_nothing(tmp_path):
    """Under bf16-mixed the weights stay float32, which the size estimate assumes: Lightning's warning that the
    estimate "will not be accurate" is wrong there, and not printed."""
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()) as out:
        warnings.simplefilter("always")
        train(compose("train", tmp_path / "run", (*SHORT, "precision=bf16-mixed", "test=false")))
    assert "net.0" in out.getvalue()  # the summary was printed
    assert not [w for w in caught if "not supported by the model summary" in str(w.message)]


def test_the_final_metrics_name_the_run_dir_on_one_line(default_run):
    """The run dir stays whole on one line, to copy and paste, however long it is."""
    run_dir, out, _ = default_run
    assert len(str(run_dir)) > 80
    assert f"Run dir: {run_dir}" in out.splitlines()
    assert out.index("Final metrics") < out.index("Run dir:")


@no_cuda
def test_dp_with_more_devices_than_cores_runs_on_one_cpu_and_says_so(make_cfg, caplog):
    """`strategy=dp trainer.devices=4` (README) on a CPU machine: one process, one device, and one line saying so;
    more CPU processes than cores is still refused for the strategies that start processes."""
    devices = (os.cpu_count() or 1) + 2
    with caplog.at_level(logging.INFO):
        train(make_cfg("strategy=dp", f"trainer.devices={devices}"))
    lines = [r.getMessage() for r in caplog.records if r.name == "hydralight.core.strategies.dp"]
    assert lines == [
        f"strategy=dp: no CUDA device, so DataParallel runs on one device (cpu) in this process, "
        f"not the {devices} of trainer.devices."
    ]
    assert any("strategy=DataParallelStrategy (1 x cpu)" in r.getMessage() for r in caplog.records)
    with pytest.raises(UserError, match="CPU cores"):
        build_trainer(make_cfg("strategy=ddp", f"trainer.devices={devices}"), [], [])


def test_16_true_with_adams_eps_is_refused_before_training_saying_what_to_use(make_cfg):
    """precision=16-true with Adam's eps (0 in float16) used to diverge at step 1 (exit 3): one line instead,
    naming the key, the value and what to use."""
    with pytest.raises(UserError, match=r"model\.optimizer\.eps=1e-08 .* is 0.*precision=16-mixed") as error:
        train(make_cfg("model=configured_regression", "precision=16-true"))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "fix",
    [
        ("model.optimizer.eps=1e-4",),
        ("model.optimizer._target_=torch.optim.SGD", "~model.optimizer.betas", "~model.optimizer.eps"),
    ],
    ids=["eps=1e-4", "sgd"],
)
def test_16_true_trains_with_an_eps_float16_can_hold(make_cfg, fix):
    """What the refusal suggests does train in float16 (no divergence, finite metrics); SGD has no eps at all."""
    metric = train(make_cfg("model=configured_regression", "precision=16-true", *fix, "test=false"))
    assert metric is not None and torch.isfinite(torch.tensor(metric))


@pytest.mark.slow  # starts W&B's service
def test_wandb_offline_prints_no_anonymous_login_warning(make_cfg, capfd):
    """logger=wandb (offline): wandb's "The anonymous setting has no effect" is not printed."""
    pytest.importorskip("wandb")
    import wandb

    (logger,) = build_loggers(make_cfg("logger=wandb").logger)
    try:
        assert logger.experiment.settings.mode in ("offline", "dryrun")
    finally:
        wandb.finish()
    assert "anonymous" not in capfd.readouterr().err.lower()


def test_help_into_a_closed_pipe_prints_no_traceback(project):
    """`python train.py --help | head -1`: the reader closed the pipe early; no BrokenPipeError, no traceback."""
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "train.py", "--help"], cwd=project, stdout=write_end, stderr=subprocess.PIPE, text=True
    )
    os.close(write_end)
    os.close(read_end)  # before the child writes: its first write finds the pipe closed
    _, err = child.communicate(timeout=60)
    assert "BrokenPipeError" not in err and "Traceback" not in err, err
    assert "Exception ignored" not in err, err
