"""A run killed with SIGKILL mid-training and resumed with the same command continues the runs its loggers wrote:
the same TensorBoard dir, MLflow run and W&B run id, and every step once in metrics.csv and TensorBoard, though the
killed run had logged steps after its last checkpoint. One killed + resumed run covers the four loggers at once.
The task is hydralight.testing's stateful one, which logs train/loss_step at every step."""

import csv
import json
import signal
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from hydralight.core.build import build_loggers
from hydralight.core.loggers import RUN_IDS_FILE, continue_logging
from hydralight.testing import assert_ok, run_cli, write_project

MLFLOW = ["mlflow", "sqlalchemy", "alembic"]  # the SQLite store needs all three
PACKAGES = {"csv": [], "tensorboard": ["tensorboard"], "mlflow": MLFLOW, "wandb": ["wandb"]}
INSTALLED = [name for name, packages in PACKAGES.items() if all(find_spec(package) for package in packages)]
STEPS_PER_EPOCH, EPOCHS = 4, 3
KILL_AT = 6  # in epoch 1: last.ckpt holds step 4, and steps 4 and 5 were logged after it
SHORT = (
    "model=stateful",
    "data=stateful",
    "trainer.accelerator=cpu",
    f"trainer.max_epochs={EPOCHS}",
    f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",  # every step reaches the loggers, those after the checkpoint too
    "test=false",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
)
KILLED = ("+callbacks.kill._target_=hydralight.testing.faults.KillAt", f"+callbacks.kill.at_step={KILL_AT}")
pytestmark = pytest.mark.slow  # three trainings with every logger, one of them killed


@dataclass
class Runs:
    resumed: Path  # killed at KILL_AT, then the same command again
    uninterrupted: Path  # the same training in one go (CSV and TensorBoard only): what the logs should hold
    resumed_from: int  # the step of the checkpoint the second command continued from
    killed_csv: list[dict]  # metrics.csv as the kill left it
    killed_events: list[Path]  # TensorBoard's event files as the kill left them
    killed_ids: dict  # loggers.json as the kill left it


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    # An in-process W&B run earlier on this test worker leaves its service's address in the environment; runs
    # sharing it would find the killed run's id still "in use" there. A user's runs each start their own.
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("WANDB_SERVICE", raising=False)
        return interrupted_and_resumed(tmp_path_factory)


def interrupted_and_resumed(tmp_path_factory) -> Runs:
    root = tmp_path_factory.mktemp("logger-resume")
    project = write_project(root / "project")
    resumed, uninterrupted = root / "resumed", root / "uninterrupted"
    command = ("train.py", f"logger=[{','.join(INSTALLED)}]", *SHORT, *KILLED, f"hydra.run.dir={resumed}")
    killed = run_cli(*command, cwd=project)
    assert killed.returncode == -signal.SIGKILL, f"exit {killed.returncode}\n{killed.stderr[-6000:]}"
    checkpoint = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = Runs(
        resumed, uninterrupted, checkpoint["global_step"], read_csv(resumed / "csv" / "metrics.csv"),
        sorted((resumed / "tensorboard").glob("events.out.tfevents.*")),
        # The ids of the loggers that have one (MLflow's, W&B's): no file when only the loggers extra's are missing.
        json.loads((resumed / RUN_IDS_FILE).read_text()) if (resumed / RUN_IDS_FILE).exists() else {},
    )  # fmt: skip
    second = run_cli(*command, cwd=project)
    assert_ok(second)
    assert "Resuming from" in second.stderr + second.stdout
    reference = ["csv", "tensorboard"] if "tensorboard" in INSTALLED else ["csv"]
    command = ("train.py", f"logger=[{','.join(reference)}]", *SHORT, f"hydra.run.dir={uninterrupted}")
    assert_ok(run_cli(*command, cwd=project))
    return state


def logged(rows: list[dict]) -> list[tuple[int, list[str]]]:
    """Each row's step and the metrics it holds (not their values: the timings differ from run to run)."""
    return [(int(row["step"]), sorted(key for key, value in row.items() if value and key != "step")) for row in rows]


def test_csv_keeps_every_step_once(runs):
    """metrics.csv of the resumed run holds the rows of an uninterrupted run, no more (the killed run's rows after
    the checkpoint are dropped, as the resumed run logs those steps again), no fewer, in step order."""
    assert runs.resumed_from == STEPS_PER_EPOCH
    after_checkpoint = {int(row["step"]) for row in runs.killed_csv} - set(range(runs.resumed_from))
    assert after_checkpoint == {4, 5}, "precondition: the killed run logged steps after its checkpoint"
    rows = read_csv(runs.resumed / "csv" / "metrics.csv")
    assert logged(rows) == logged(read_csv(runs.uninterrupted / "csv" / "metrics.csv"))
    before = [row for row in runs.killed_csv if int(row["step"]) < runs.resumed_from]
    assert rows[: len(before)] == before  # the curve up to the checkpoint is the killed run's, as it was written
    loss_steps = [int(row["step"]) for row in rows if row["train/loss_step"]]
    assert loss_steps == list(range(STEPS_PER_EPOCH * EPOCHS))


def scalar_steps(event_file: Path) -> dict[str, list[int]]:
    """The steps of each scalar tag as written in one event file, purges not applied."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    steps: dict[str, list[int]] = {}
    for event in LegacyEventFileLoader(str(event_file)).Load():
        for value in event.summary.value:
            if value.HasField("simple_value"):
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def shown_steps(log_dir: Path) -> dict[str, list[int]]:
    """The steps of each scalar tag as TensorBoard shows them: its reader applies the purges."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [event.step for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_continues_in_the_same_dir_and_shows_every_step_once(runs):
    """The resumed run writes its event file beside the killed run's and starts at the checkpoint's step; what
    TensorBoard shows per tag equals an uninterrupted run, though the killed run's file holds steps 4 and 5 too."""
    pytest.importorskip("tensorboard")
    (killed_file,) = runs.killed_events
    assert max(scalar_steps(killed_file)["train/loss_step"]) == KILL_AT - 1, "precondition: steps after the checkpoint"
    files = sorted((runs.resumed / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2 and files[0] == killed_file, f"one dir, one file per start: {files}"
    resumed_steps = scalar_steps(files[1])
    assert min(min(steps) for steps in resumed_steps.values()) == runs.resumed_from  # no step goes back
    assert shown_steps(runs.resumed / "tensorboard") == shown_steps(runs.uninterrupted / "tensorboard")
    assert shown_steps(runs.resumed / "tensorboard")["train/loss_step"] == list(range(STEPS_PER_EPOCH * EPOCHS))


def test_mlflow_continues_the_same_run_with_metrics_at_every_step(runs):
    """One MLflow run in the store, the one the killed run started (its id kept in loggers.json), finished, with
    each metric at every step an uninterrupted run logs it at."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{runs.resumed / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "train"]
    (run,) = client.search_runs([experiment.experiment_id])
    recorded = json.loads((runs.resumed / RUN_IDS_FILE).read_text())["mlflow"]
    assert run.info.run_id == runs.killed_ids["mlflow"] == recorded
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer/max_epochs"] == str(EPOCHS)
    expected: dict[str, set[int]] = {}
    for row in read_csv(runs.uninterrupted / "csv" / "metrics.csv"):
        for key, value in row.items():
            if value and key != "step":
                expected.setdefault(key, set()).add(int(row["step"]))
    history = {key: {m.step for m in client.get_metric_history(run.info.run_id, key)} for key in expected}
    assert history == expected


def test_wandb_continues_the_same_run_id(runs):
    """Offline, W&B writes one dir per start; both carry the run id the killed run recorded, so `wandb sync` uploads
    them in order into one run."""
    pytest.importorskip("wandb")
    run_id = runs.killed_ids["wandb"]
    assert json.loads((runs.resumed / RUN_IDS_FILE).read_text())["wandb"] == run_id
    offline = sorted((runs.resumed / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(path.name.endswith(f"-{run_id}") for path in offline), offline
    assert all((path / f"run-{run_id}.wandb").is_file() for path in offline)


def test_a_run_that_starts_from_no_checkpoint_gets_new_ids(make_cfg, tmp_path):
    """Only a resumed run reuses the ids: a start without a checkpoint, in a dir whose loggers.json holds the ids of
    an earlier start, makes a new MLflow run and a new W&B id and records them."""
    for package in (*MLFLOW, "wandb"):
        pytest.importorskip(package)
    import wandb

    cfg = make_cfg("logger=[mlflow,wandb]")
    ids = []
    for _ in range(2):
        continue_logging(build_loggers(cfg.logger), cfg.paths.output_dir, None)
        wandb.finish()
        ids.append(json.loads((Path(cfg.paths.output_dir) / RUN_IDS_FILE).read_text()))
    assert ids[0]["mlflow"] != ids[1]["mlflow"] and ids[0]["wandb"] != ids[1]["wandb"], ids


def test_mlflow_resumed_with_changed_params_keeps_the_first_values(tmp_path, caplog):
    """MLflow refuses to change a logged param: a resumed run with e.g. trainer.max_epochs raised still logs into
    its run, which keeps the first value (with a warning) and gets the new params."""
    for package in MLFLOW:
        pytest.importorskip(package)
    from hydralight.core.loggers import MLFlowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = MLFlowLogger(tracking_uri=uri)
    first.log_hyperparams({"trainer": {"max_epochs": 1}, "seed": 42})
    resumed = MLFlowLogger(tracking_uri=uri, run_id=first.run_id)
    resumed.log_hyperparams({"trainer": {"max_epochs": 2}, "seed": 42, "new": "yes"})
    assert any("not changed: ['trainer/max_epochs']" in message for message in caplog.messages)
    params = resumed.experiment.get_run(first.run_id).data.params
    assert params == {"trainer/max_epochs": "1", "seed": "42", "new": "yes"}
