"""A task defined outside the project, as a user adds one: a package of their own (lib/tests/outside_task/my_task: a
regression, a GAN stepping its own two optimizers, and Lightning's BoringModel/BoringDataModule; and configs naming a
module of dict inputs) and a config dir of their own whose files hold only `_target_` and the class's own arguments,
found through `hydra.searchpath`. The harness trains it, evaluates its checkpoints, runs it under DDP, sweeps it and
exports it, with `monitor=<its metric> mode=<its mode>` and no edit to the project (here the testing project of
hydralight.testing, written to a dir of its own).

The commands run as a user types them, from the outside project's own dir with default run dirs:

    cd their_project
    PYTHONPATH=. python <project>/train.py 'hydra.searchpath=[file://conf]' model=my_regression data=my_regression \\
        monitor=val/mse mode=min
"""

import csv
import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from hydralight.core.errors import UserError
from hydralight.core.evaluate import evaluate
from hydralight.core.strategies import DataParallelStrategy
from hydralight.core.train import train
from hydralight.testing import QUICK, assert_ok, compose, run_cli, write_project

OUTSIDE = Path(__file__).resolve().parent / "outside_task"
SEARCHPATH = "hydra.searchpath=[file://conf]"  # relative to the dir the command starts in, as a user types it
# Each task (its model config), its data config, the metric it logs for `monitor` and its mode, and its test metric.
TASKS = {
    "my_regression": ("my_regression", "val/mse", "min", "test/mse"),
    "boring": ("boring", "val/loss", "min", "test/loss"),
    "gan": ("points", "val_acc", "max", "test_acc"),  # two optimizers stepped by hand; metrics without a `/`
    "masked": ("masked", "val/loss", "min", "test/loss"),  # dict batches, forward(values, mask)
}
SHORT = ("trainer.max_epochs=2",)  # only what shortens a run
SHORTER = {"boring": ("trainer.limit_train_batches=16", "trainer.limit_val_batches=16")}
TINY = (*QUICK, "trainer.limit_train_batches=4", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")


def task_args(name: str) -> list[str]:
    """`model=<name> data=<its data> monitor=<its metric> mode=<its mode>`, shortened."""
    data, monitor, mode, _ = TASKS[name]
    return [f"model={name}", f"data={data}", f"monitor={monitor}", f"mode={mode}", *SHORT, *SHORTER.get(name, ())]


# ---------------------------------------------------------------------------------------------------------------
# In process: the harness's own parts on tasks the project knows nothing of.


@pytest.fixture
def outside_cfg(tmp_path, monkeypatch):
    """outside_cfg(*overrides): the train config with the outside configs on the search path and `my_task` on
    sys.path, writing into tmp_path/run."""
    monkeypatch.syspath_prepend(str(OUTSIDE))

    def make(*overrides: str, config_name: str = "train"):
        searchpath = f"hydra.searchpath=[file://{OUTSIDE / 'conf'}]"
        return compose(config_name, tmp_path / "run", (*TINY, searchpath, *overrides))

    return make


def test_a_monitor_the_module_does_not_log_is_one_line_naming_what_it_logs(outside_cfg):
    """The project's monitor (val/loss) on a task that logs val/mse: one line naming what it does log, not
    Lightning's traceback, found by the sanity check before the first training step (not after an epoch)."""
    cfg = outside_cfg("model=my_regression", "data=my_regression")
    with pytest.raises(UserError, match=r"monitor='val/loss': RegressionModule logs no metric of that name") as error:
        train(cfg)
    assert "(it logs: val/mse)" in str(error.value)
    assert "monitor=val/mse mode=min (a loss, an error) or mode=max" in str(error.value)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))  # stopped before training wrote anything


def test_eval_reproduces_a_test_whose_data_comes_from_the_global_rng(outside_cfg, tmp_path):
    """BoringDataModule draws its data from the global RNG when it is built: eval seeds it right before the data,
    as train does, so loading the model first does not change the test set."""
    trained = outside_cfg(*task_args("boring"), "trainer.limit_test_batches=8")
    train(trained)
    best = next((Path(trained.paths.output_dir) / "checkpoints").glob("epoch*.ckpt"))
    train_metrics = json.loads((Path(trained.paths.output_dir) / "metrics.json").read_text())
    searchpath = f"hydra.searchpath=[file://{OUTSIDE / 'conf'}]"
    cfg = compose("eval", tmp_path / "eval", (*TINY, searchpath, f"ckpt_path={best}", "trainer.limit_test_batches=8"))
    assert evaluate(cfg, overrides=[])["test/loss"] == train_metrics["test/loss"]


def test_plots_on_a_regression_draw_its_curves_and_say_why_there_is_no_confusion_matrix(outside_cfg, caplog):
    pytest.importorskip("matplotlib")
    cfg = outside_cfg(*task_args("my_regression"), "callbacks=plots")
    with caplog.at_level(logging.INFO, logger="hydralight.core.callbacks.plots"):
        train(cfg)
    plots = Path(cfg.paths.output_dir) / "plots"
    assert sorted(path.name for path in plots.iterdir()) == ["learning_curves.png"]
    lines = [record.getMessage() for record in caplog.records if "no confusion matrix" in record.getMessage()]
    assert lines == [
        "callbacks=plots: no confusion matrix for RegressionModule: its batches are not (inputs, integer class "
        "labels); it gets its learning curves."
    ]


def test_lr_find_sets_a_plain_lr_argument_and_the_optimizer(outside_cfg):
    """A module with an `lr` argument (no optimizer config): the suggestion reaches its hparams (so checkpoints
    record it) and the optimizer it trains with."""
    cfg = outside_cfg(*task_args("my_regression"), "tune=lr_find", "callbacks.lr_find.num_training_steps=20")
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    suggestion = json.loads((run_dir / "lr_find.json").read_text())["suggestion"]
    assert suggestion != cfg.model.lr
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["hyper_parameters"]["lr"] == pytest.approx(suggestion)
    assert [group["lr"] for group in last["optimizer_states"][0]["param_groups"]] == [pytest.approx(suggestion)]


def test_lr_find_on_a_module_that_holds_no_lr_says_so_in_one_line(outside_cfg, caplog):
    """BoringModel builds SGD(lr=0.1) in code: the optimizer trains with the suggestion, and one line says the
    checkpoint's hyperparameters cannot record it."""
    cfg = outside_cfg(*task_args("boring"), "tune=lr_find", "callbacks.lr_find.num_training_steps=20", "test=false")
    with caplog.at_level(logging.WARNING, logger="hydralight.core.callbacks.tuning"):
        train(cfg)
    lines = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(lines) == 1
    assert lines[0].startswith("tune=lr_find: LoggingBoringModel has no hparams.optimizer, lr or learning_rate")


def test_batch_size_finder_on_data_without_a_batch_size_is_one_line(outside_cfg):
    """BoringDataModule takes no batch size: tune=batch_size composes (no `${data.batch_size}` to resolve) and
    stops before training, saying what the finder needs."""
    with pytest.raises(UserError, match=r"tune=batch_size: Field batch_size not found") as error:
        train(outside_cfg(*task_args("boring"), "tune=batch_size"))
    assert "callbacks.batch_size_finder.batch_arg_name=<attribute>" in str(error.value)


def test_dp_wraps_the_one_network_of_a_module_without_net(outside_cfg):
    """strategy=dp on a module whose network is `self.model`: trained, tested, and saved with plain keys."""
    cfg = outside_cfg(*task_args("my_regression"), "strategy=dp")
    train(cfg)
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert sorted(last["state_dict"]) == ["model.0.bias", "model.0.weight", "model.2.bias", "model.2.weight"]
    assert "test/mse" in json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


class TwoNetworks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Linear(2, 2), nn.Linear(2, 2)


def test_dp_network_is_net_else_the_one_sub_module_with_parameters_else_a_clear_line():
    from lightning.pytorch.demos.boring_classes import BoringModel
    from torchmetrics import MeanMetric

    strategy = DataParallelStrategy()
    boring = BoringModel()
    boring.mean = MeanMetric()  # a metric is a sub-module without parameters: not a network
    assert strategy._network_name(boring) == "layer"
    two = TwoNetworks()
    with pytest.raises(UserError, match=r"strategy.module_name=null: TwoNetworks has no `net` and several") as error:
        strategy._network_name(two)
    assert str(error.value).endswith("Choose one of: encoder, decoder")
    assert DataParallelStrategy(module_name="decoder")._network_name(two) == "decoder"


def test_help_lists_the_outside_options_with_the_projects(tmp_path):
    """`--help` with an outside search path lists its options in their groups (Hydra's own help lists none)."""
    project = outside_project(tmp_path)
    result = run_outside(project, "train.py", SEARCHPATH, "model=my_regression", "data=my_regression", "--help")
    assert_ok(result)
    for group in ("data", "model"):  # the project's option (regression) and the outside ones
        (options,) = re.findall(rf"^{group}: (.*)$", result.stdout, re.MULTILINE)
        assert {"regression", "boring", "my_regression"} <= set(options.split(", ")), options
    assert "_target_: my_task.RegressionModule" in result.stdout


@pytest.mark.parametrize(
    ("switch", "refused"),
    [
        ("gradient_clip_val=1.0", r"gradient_clip_val=1.0: PointsGAN steps its own optimizers .*self.clip_gradients"),
        ("accumulate_grad_batches=2", r"accumulate_grad_batches=2: PointsGAN steps its own optimizers"),
        ("tune=lr_find", r"tune=lr_find: PointsGAN steps its own optimizers"),
        ("strategy=dp", r"strategy.module_name=null: PointsGAN has no `net` and several"),
        ("precision=bf16-mixed", None),
        ("callbacks=ema", None),
    ],
)
def test_each_switch_trains_the_gan_or_stops_in_one_line_before_training(outside_cfg, switch, refused):
    """The done-when of issue 27 for a module stepping its own optimizers: a switch works, or says in one line what
    to do instead, before anything is written."""
    cfg = outside_cfg(*task_args("gan"), switch)
    if refused is None:
        train(cfg)
        assert "test_acc" in json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
        return
    with pytest.raises(UserError, match=refused):
        train(cfg)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))


@pytest.mark.parametrize(("name", "inputs"), [("gan", ["noise"]), ("masked", ["values", "mask"])])
def test_export_keeps_every_input_of_an_outside_module_by_name(outside_cfg, tmp_path, name, inputs):
    """export.py on an outside module's checkpoint, to ONNX: every input of forward, by its name (the GAN's generator
    takes `noise`; the dict-input module `values` and `mask`), checked against the checkpoint."""
    pytest.importorskip("onnxruntime")
    import onnxruntime

    from hydralight.core.export import export

    trained = outside_cfg(*task_args(name), "test=false")
    train(trained)
    best = next((Path(trained.paths.output_dir) / "checkpoints").glob("epoch*.ckpt"))
    searchpath = f"hydra.searchpath=[file://{OUTSIDE / 'conf'}]"
    cfg = compose("export", tmp_path / "export", (searchpath, f"ckpt_path={best}", "format=onnx"))
    result = export(cfg)
    session = onnxruntime.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    assert [node.name for node in session.get_inputs()] == inputs
    assert result["max_abs_diff"] <= cfg.tolerance


# ---------------------------------------------------------------------------------------------------------------
# Subprocesses: the commands as a user types them, from the outside project's dir, with default run dirs.


def outside_project(tmp_path: Path) -> Path:
    """A copy of the outside project (its package and its conf/), the dir the user works in, beside the testing
    project (tmp_path/hydralight) whose entry scripts the user runs."""
    write_project(tmp_path / "hydralight")
    project = tmp_path / "their_project"
    shutil.copytree(OUTSIDE, project, ignore=shutil.ignore_patterns("__pycache__"))
    return project


def run_outside(project: Path, script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`PYTHONPATH=. python <hydralight>/<script> <args>` started in `project`."""
    entry = project.parent / "hydralight" / script
    return run_cli(str(entry), *args, timeout=timeout, env={"PYTHONPATH": "."}, cwd=project)


def only_dir(parent: Path) -> Path:
    dirs = [path for path in parent.iterdir() if path.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def epoch_values(run_dir: Path, metric: str) -> dict[int, float]:
    """`metric` per epoch, from the run's csv log."""
    with (run_dir / "csv" / "metrics.csv").open() as file:
        return {int(row["epoch"]): float(row[metric]) for row in csv.DictReader(file) if row.get(metric)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TASKS))
def test_outside_task_trains_by_its_monitor_and_eval_reproduces_its_test_metric(tmp_path, name):
    _, monitor, mode, test_metric = TASKS[name]
    best_of = min if mode == "min" else max
    project = outside_project(tmp_path)
    trained = run_outside(project, "train.py", SEARCHPATH, *task_args(name))
    assert_ok(trained)
    run_dir = only_dir(project / "outputs" / "train" / "runs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"{test_metric} " in trained.stdout  # the final table prints the test metric

    # The best checkpoint is the epoch of the best `monitor`, and it is what the run tested.
    per_epoch = epoch_values(run_dir, monitor)
    best_epoch = best_of(per_epoch, key=per_epoch.get)
    [best] = (run_dir / "checkpoints").glob("epoch*.ckpt")
    assert best.name.startswith(f"epoch{best_epoch:03d}-")
    assert metrics[f"{monitor}_best"] == pytest.approx(per_epoch[best_epoch])
    assert f"Testing {best}" in (run_dir / "train.log").read_text()

    # eval rebuilds the module and the data from the checkpoint: no model= or data= needed, but the configs that
    # name them, on the search path as for training (a checkpoint is data: it builds only what they name).
    refused = run_outside(project, "eval.py", f"ckpt_path={best}")
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith(
        "Add a config that names it if it is yours, or put its conf/ on hydra.searchpath."
    )
    evaluated = run_outside(project, "eval.py", SEARCHPATH, f"ckpt_path={best}")
    assert_ok(evaluated)
    eval_metrics = json.loads((only_dir(project / "outputs" / "eval" / "runs") / "metrics.json").read_text())
    assert eval_metrics[test_metric] == metrics[test_metric]


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two CPU processes need two cores")
@pytest.mark.parametrize("name", ["my_regression", "gan", "masked"])
def test_outside_task_trains_under_ddp_on_two_cpu_processes(tmp_path, name):
    """As typed: the GAN's backward passes each leave the other network's parameters unused, which DDP is told."""
    _, monitor, _, test_metric = TASKS[name]
    project = outside_project(tmp_path)
    result = run_outside(project, "train.py", SEARCHPATH, *task_args(name), "strategy=ddp", "trainer.devices=2")
    assert_ok(result)
    assert "Traceback" not in result.stderr
    run_dir = only_dir(project / "outputs" / "train" / "runs")  # both ranks, one run dir
    log = (run_dir / "train.log").read_text()
    assert "strategy=DDPStrategy (2 x cpu)" in log
    if name == "gan":
        assert "strategy.find_unused_parameters=true: PointsGAN steps its own optimizers" in log
    assert {f"{monitor}_best", test_metric} <= set(json.loads((run_dir / "metrics.json").read_text()))


@pytest.mark.slow
@pytest.mark.sweeps
def test_outside_task_sweep_summary_ranks_by_its_metric_ascending(tmp_path):
    project = outside_project(tmp_path)
    result = run_outside(project, "train.py", "-m", SEARCHPATH, *task_args("my_regression"), "model.lr=0.01,0.1")
    assert_ok(result)
    assert "best first by val/mse_best (minimize)" in result.stdout
    summary = json.loads((only_dir(project / "outputs" / "train" / "multiruns") / "summary.json").read_text())
    assert (summary["metric"], summary["direction"]) == ("val/mse_best", "minimize")
    jobs = summary["jobs"]
    assert [job["status"] for job in jobs] == ["completed", "completed"]
    scores = [job["metrics"]["val/mse_best"] for job in jobs]
    assert scores == sorted(scores) and scores[0] < scores[1]


@pytest.mark.slow
@pytest.mark.sweeps
def test_gan_sweep_ranks_by_val_acc_and_shows_test_acc(tmp_path):
    """Metric names without a `/`: the sweep ranks by `val_acc` (maximize) and its printed table shows `test_acc`."""
    project = outside_project(tmp_path)
    result = run_outside(project, "train.py", "-m", SEARCHPATH, *task_args("gan"), "model.lr=0.002,0.02")
    assert_ok(result)
    assert "best first by val_acc_best (maximize)" in result.stdout
    header = next(line for line in result.stdout.splitlines() if "val_acc_best" in line and "test_acc" in line)
    assert header.index("val_acc_best") < header.index("test_acc")
    summary = json.loads((only_dir(project / "outputs" / "train" / "multiruns") / "summary.json").read_text())
    scores = [job["metrics"]["val_acc_best"] for job in summary["jobs"]]
    assert [job["status"] for job in summary["jobs"]] == ["completed", "completed"]
    assert scores == sorted(scores, reverse=True)
