"""logger=tensorboard / mlflow / wandb / many: each trains one tiny epoch offline, writes its files into the run dir
and receives the resolved config and the git commit of the project the run started in as hyperparameters."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hydralight.core.runs.provenance import git_state
from hydralight.core.train import train


def git(*args: str, cwd: Path) -> str:
    config = ("-c", "user.name=test", "-c", "user.email=test@example.com")
    return subprocess.run(["git", *config, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def commit(tmp_path: Path) -> str | None:
    """The run's project (tmp_path, where make_cfg's runs start) as a git checkout of one commit: its HEAD, what the
    loggers should report; None without git."""
    if shutil.which("git") is None:
        return None
    git("init", "-q", cwd=tmp_path)
    (tmp_path / "train.py").write_text("# the project's code\n")
    git("add", "train.py", cwd=tmp_path)
    git("commit", "-q", "-m", "first", cwd=tmp_path)
    return git("rev-parse", "HEAD", cwd=tmp_path)


@pytest.fixture
def closed_wandb_runs(monkeypatch) -> list[dict]:
    """What each W&B run held when the task closed it (the task must close it: a sweep's next job would reuse it)."""
    closed: list[dict] = []
    try:
        import wandb
    except ImportError:
        return closed
    real_finish = wandb.finish

    def finish(*args, **kwargs):
        if wandb.run is not None:
            run = wandb.run
            closed.append({"mode": run.settings.mode, "dir": run.dir, "config": dict(run.config),
                           "val/loss": run.summary.get("val/loss")})  # fmt: skip
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(wandb, "finish", finish)
    return closed


def assert_tensorboard(run_dir: Path, commit: str | None) -> None:
    log_dir = run_dir / "tensorboard"
    assert list(log_dir.glob("events.out.tfevents.*")), f"no event file in {log_dir}"
    hparams = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert hparams["git"]["commit"] == commit
    assert hparams["trainer"]["max_epochs"] == 1  # the resolved config, not only the model's hparams


def assert_mlflow(run_dir: Path, commit: str | None) -> None:
    from mlflow.tracking import MlflowClient

    assert (run_dir / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "train"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["git/commit"] == str(commit)
    assert run.data.params["trainer/max_epochs"] == "1"
    assert {"val/loss", "test/loss"} <= run.data.metrics.keys()
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(run_dir)  # artifacts stay in the run dir


def assert_wandb(run_dir: Path, commit: str | None, closed: list[dict]) -> None:
    import wandb

    assert wandb.run is None  # the task closed its run
    (run,) = closed
    assert run["mode"] in ("offline", "dryrun")  # nothing is sent
    assert Path(run["dir"]).is_relative_to(run_dir / "wandb")
    assert run["config"]["git"]["commit"] == commit
    assert run["config"]["trainer"]["max_epochs"] == 1  # the resolved config, not only the model's hparams
    assert run["val/loss"] is not None
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline_run.glob("run-*.wandb"))  # what `wandb sync` uploads later


CHECKS = {"tensorboard": [assert_tensorboard], "mlflow": [assert_mlflow], "wandb": [assert_wandb]}
PACKAGES = {"tensorboard": ["tensorboard"], "mlflow": ["mlflow", "sqlalchemy", "alembic"], "wandb": ["wandb"]}


@pytest.mark.parametrize(
    "option",
    [
        "tensorboard",
        "mlflow",
        "wandb",
        pytest.param("many", marks=pytest.mark.slow),
    ],
)
def test_logger_option_trains_offline_and_logs_config_and_commit(make_cfg, commit, closed_wandb_runs, monkeypatch,
                                                                option):  # fmt: skip
    """logger=<option> trains one epoch with no network, writes its files in the run dir, with config + commit."""
    loggers = ["tensorboard", "mlflow", "wandb"] if option == "many" else [option]
    for name in loggers:
        for package in PACKAGES[name]:
            pytest.importorskip(package)
    monkeypatch.setenv("WANDB_MODE", "offline")  # belt and braces: the config already says offline
    cfg = make_cfg(f"logger={option}")
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    for name in loggers:
        for check in CHECKS[name]:
            if name == "wandb":
                check(run_dir, commit, closed_wandb_runs)
            else:
                check(run_dir, commit)
    if option == "many":
        assert (run_dir / "csv" / "metrics.csv").is_file()


def test_a_list_of_options_combines_loggers(make_cfg, commit):
    """logger=[csv,tensorboard] (Hydra's list of options) composes both loggers, each writing its own files."""
    pytest.importorskip("tensorboard")
    cfg = make_cfg("logger=[csv,tensorboard]")
    assert list(cfg.logger) == ["csv", "tensorboard"]
    train(cfg)
    assert (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").is_file()
    assert_tensorboard(Path(cfg.paths.output_dir), commit)


def test_git_state_outside_a_repository_is_none(tmp_path):
    """Outside a git checkout the commit is None (logged as such), not an error."""
    (tmp_path / "plain").mkdir()
    assert git_state(tmp_path / "plain") == {"commit": None, "dirty": None}
    if shutil.which("git"):
        git("init", "-q", cwd=tmp_path / "plain")
        (tmp_path / "plain" / "a.txt").write_text("a\n")
        git("add", "a.txt", cwd=tmp_path / "plain")
        git("commit", "-q", "-m", "first", cwd=tmp_path / "plain")
        assert git_state(tmp_path / "plain") == {"commit": git("rev-parse", "HEAD", cwd=tmp_path / "plain"),
                                                 "dirty": False}  # fmt: skip
        (tmp_path / "plain" / "a.txt").write_text("b\n")
        assert git_state(tmp_path / "plain")["dirty"] is True
