"""Hydra multirun sweeps as a user runs them: grid, Optuna (its sqlite storage), over DDP jobs, failures; the summary
and its groups, and the share of the machine parallel jobs get (joblib itself: the template's README test).

Every sweep is a real `python train.py -m ...` subprocess in the testing project (hydralight.testing.write_project)
on tiny settings, writing only under tmp_path (its sweep dir and `paths.log_dir`, so a stray run dir would show). The
Optuna tests skip without the sweeps extra.
"""

import csv
import fcntl
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from hydralight.core.errors import UserError
from hydralight.core.resolvers import register_resolvers
from hydralight.core.sweeps import share
from hydralight.core.sweeps.isolation import entry_command, job_overrides, may_start_processes
from hydralight.core.sweeps.share import slot_gpus
from hydralight.core.sweeps.storage import sqlite_path
from hydralight.core.sweeps.summary import SweepSummary, is_test_metric
from hydralight.testing import CONFIG_DIR, QUICK, assert_ok, run_cli, write_project

pytestmark = pytest.mark.sweeps

TINY_SWEEP = (*QUICK, "logger=none")
GRID = ("model.lr=0.01,0.05", "callbacks=default,early_stopping")  # a key and a group
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def sweep(
    root: Path, *args: str, name: str = "sweep", multirun: bool = True, timeout: float = 240
) -> subprocess.CompletedProcess:
    """`python train.py -m <tiny> <args>` in the testing project written in root/project, with its sweep dir
    root/<name> and every other output under root/outputs."""
    project = root / "project" if (root / "project").is_dir() else write_project(root / "project")
    flags = ("-m",) if multirun else ()
    sweep_args = (f"hydra.sweep.dir={root / name}", f"paths.log_dir={root / 'outputs'}")
    return run_cli("train.py", *flags, *TINY_SWEEP, *sweep_args, *args, cwd=project, timeout=timeout)


def summary(sweep_dir: Path) -> list[dict]:
    return json.loads((sweep_dir / "summary.json").read_text())["jobs"]


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((path for path in sweep_dir.iterdir() if path.is_dir()), key=lambda path: int(path.name))


def assert_best_first(jobs: list[dict], metric: str = "val/loss_best") -> None:
    """The completed jobs' `metric` ascending: the testing project's mode=min."""
    values = [job["metrics"][metric] for job in jobs if job["status"] == "completed"]
    assert values == sorted(values), values


@pytest.fixture(scope="module")
def basic_grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The 2x2 grid with Hydra's basic launcher, run once for the tests that read or compare it."""
    root = tmp_path_factory.mktemp("grid")
    result = sweep(root, *GRID)
    assert_ok(result)
    return root, result


def test_grid_sweep_one_dir_per_job_and_a_summary_best_first(basic_grid):
    """2x2 grid: one sweep dir, 4 job dirs each with metrics.json and last.ckpt, a summary of 4 rows, best (lowest
    val/loss) first."""
    root, result = basic_grid
    sweep_dir = root / "sweep"
    assert not (root / "outputs").exists()  # no run dir claimed outside the sweep dir
    assert [path.name for path in job_dirs(sweep_dir)] == ["0", "1", "2", "3"]
    for job_dir in job_dirs(sweep_dir):
        assert {"val/loss_best", "test/loss"} <= json.loads((job_dir / "metrics.json").read_text()).keys()
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
    jobs = summary(sweep_dir)
    assert len(jobs) == 4 and all(job["status"] == "completed" for job in jobs)
    assert_best_first(jobs)
    for job in jobs:  # what the train task returned is optimized_metric (val/loss_best)
        assert job["value"] == pytest.approx(job["metrics"]["val/loss_best"])
    header, *rows = (sweep_dir / "summary.csv").read_text().splitlines()
    assert header.startswith("rank,job,status,model.lr,callbacks,val/loss_best,")
    assert len(rows) == 4
    assert "Sweep summary: 4 jobs, 4 ok, 0 failed; best first by val/loss_best (minimize)" in result.stdout


def test_failed_job_is_reported_and_the_other_jobs_finish(tmp_path):
    """A job with an invalid value fails with one line naming its overrides; the next job still runs, the summary
    marks the failure, and the sweep exits 1 at the end."""
    result = sweep(tmp_path, "accumulate_grad_batches=0,1")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error: job 0 (accumulate_grad_batches=0) failed: accumulate_grad_batches=0 is not valid" in result.stderr
    assert "Traceback" not in result.stderr
    assert "error: 1 of 2 jobs failed (job 0)" in result.stderr
    sweep_dir = tmp_path / "sweep"
    assert (sweep_dir / "1" / "metrics.json").is_file()
    assert not (sweep_dir / "0" / "metrics.json").exists()
    jobs = summary(sweep_dir)
    assert [(job["job"], job["status"]) for job in jobs] == [(1, "completed"), (0, "failed")]
    assert jobs[1]["error"].startswith("UserError: accumulate_grad_batches=0 is not valid")
    assert ",failed," in (sweep_dir / "summary.csv").read_text()


@pytest.fixture
def optuna():
    return pytest.importorskip("optuna", reason="needs the sweeps extra")


def test_an_optuna_search_minimizes_the_monitor_into_its_sqlite_study(optuna, tmp_path):
    """hparams_search=regression_optuna (a multirun by itself, no -m): its trials ranked by val/loss_best ascending,
    and told to a minimizing study in a sqlite file whose folder did not exist (a later run continues it)."""
    storage = f"sqlite:///{tmp_path / 'optuna' / 'study.db'}"
    search = ("hparams_search=regression_optuna", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}")
    result = sweep(tmp_path, *search, multirun=False)
    assert_ok(result)
    assert "Sweep summary: 2 jobs, 2 ok, 0 failed; best first by val/loss_best (minimize)" in result.stdout
    jobs = summary(tmp_path / "sweep")
    assert_best_first(jobs)
    study = optuna.load_study(study_name="regression_optuna", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    told = sorted(trial.value for trial in study.trials)
    assert told == pytest.approx([job["metrics"]["val/loss_best"] for job in jobs])
    assert not (tmp_path / "outputs").exists()
    if importlib.util.find_spec("matplotlib") is not None:  # the plots extra: the study's pictures, named
        assert f"Written: {tmp_path / 'sweep' / 'optuna_metric_per_trial.png'}" in result.stdout


@pytest.mark.slow
def test_a_diverging_ddp_job_does_not_end_the_sweep(tmp_path):
    """Both ranks of job 0 stop on a NaN gradient (rank 1 exits 3): the sweep is not killed, job 1 trains with
    its own two ranks, and the sweep exits 1 after the summary."""
    result = sweep(tmp_path, "strategy=ddp", "trainer.devices=2", "data.batch_size=4", "model.lr=1e30,0.01")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error: job 0 (model.lr=1e+30) failed: The gradient norm (nan) is not finite" in result.stderr
    jobs = summary(tmp_path / "sweep")
    assert [(job["job"], job["status"]) for job in jobs] == [(1, "completed"), (0, "failed")]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (tmp_path / "sweep" / "1" / "train.log").read_text()


# Units: the pieces above, without a subprocess.


@pytest.mark.parametrize("option", sorted(path.stem for path in (Path(CONFIG_DIR) / "hparams_search").glob("*.yaml")))
def test_search_space_names_real_keys_and_options(optuna, option):
    """Every key of an hparams_search space exists in the composed config (or is a group whose choices are files),
    so a typo fails here and not as 20 failed trials; the direction follows the top-level mode (min)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={option}"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode == RunMode.MULTIRUN
    assert cfg.hydra.sweeper.direction == "minimize"
    assert cfg.hydra.sweeper.study_name  # fixed: a storage then continues the same study
    parser = OverridesParser.create()
    for key, space in cfg.hydra.sweeper.params.items():
        sweep_values = parser.parse_override(f"{key}={space}").value()
        if "/" in key:
            for choice in sweep_values.list:
                assert (Path(CONFIG_DIR) / key / f"{choice}.yaml").is_file(), f"{key}={choice}"
        else:
            assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key
            for choice in getattr(sweep_values, "list", []):  # what Optuna writes back: f"{key}={choice}"
                assert parser.parse_override(f"{key}={choice}").value() is not None


def test_rank_command_reruns_only_the_job():
    """A rank's overrides: the job's own, the user's non-sweep hydra overrides, and hydra.mode=RUN."""
    hydra_cfg = OmegaConf.create({
        "overrides": {
            "task": ["strategy=ddp", "model.lr=0.1", "hparams_search=regression_optuna"],
            "hydra": ["hydra.mode=MULTIRUN", "hydra.sweep.dir=/s", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                      "hydra.verbose=true", "hydra.job_logging.root.level=DEBUG", "hydra.sweeper.n_trials=3"],
        }
    })  # fmt: skip
    assert job_overrides(hydra_cfg) == [
        "strategy=ddp", "model.lr=0.1", "hparams_search=regression_optuna",
        "hydra.verbose=true", "hydra.job_logging.root.level=DEBUG", "hydra.mode=RUN",
    ]  # fmt: skip


def test_rank_entry_keeps_the_config_flags_and_drops_the_sweep(monkeypatch):
    import __main__

    monkeypatch.setattr(__main__, "__spec__", None, raising=False)  # as under `python train.py`, whatever ran pytest
    command = entry_command(["train.py", "-m", "-cn", "eval", "--config-dir=/extra", "a=1", "b=2,3"])
    assert command[1:] == [str(Path("train.py").resolve()), "--config-name=eval", "--config-dir=/extra"]


@pytest.mark.parametrize(
    ("trainer", "expected"),
    [({"devices": 1}, False), ({"devices": [0]}, False), ({"devices": 2}, True), ({"devices": "auto"}, True),
     ({"devices": 1, "num_nodes": 2}, True)],
)  # fmt: skip
def test_only_multi_process_jobs_patch_the_launcher(trainer, expected):
    assert may_start_processes(OmegaConf.create({"trainer": trainer})) is expected


def test_sqlite_path():
    assert sqlite_path("sqlite:///outputs/a.db") == Path("outputs/a.db")
    assert sqlite_path("sqlite:////abs/b.db") == Path("/abs/b.db")
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path(None) is None
    assert sqlite_path("postgresql://host/db") is None


def job_config(output_dir: Path, num: int, sweeper: str = BASIC_SWEEPER):
    return OmegaConf.create({
        "hydra": {"mode": RunMode.MULTIRUN, "runtime": {"output_dir": str(output_dir)}, "job": {"num": num},
                  "sweeper": {"_target_": sweeper}, "sweep": {"dir": str(output_dir.parent)},
                  "overrides": {"task": ["seed=1", "lr=0.1,0.2,0.3"]}},
    })  # fmt: skip


def test_summary_records_failures_and_ranks_best_first(tmp_path, capsys):
    """Failed jobs: one line on stderr, recorded, handed back to the basic sweeper as completed (so it goes on);
    the end writes the table best first, failures last, and exits 1."""
    callback = SweepSummary(metric="val/r2_best")
    callback.on_multirun_start(job_config(tmp_path / "0", 0))
    for num, r2 in ((0, 0.5), (1, None), (2, 0.9)):
        job_dir = tmp_path / str(num)
        job_dir.mkdir()
        if r2 is None:
            job = JobReturn(overrides=["seed=1", "lr=0.2"], status=JobStatus.FAILED, _return_value=UserError("lr bad"))
        else:
            (job_dir / "metrics.json").write_text(json.dumps({"val/r2_best": r2, "test/r2": r2}))
            job = JobReturn(overrides=["seed=1", f"lr=0.{num + 1}"], status=JobStatus.COMPLETED, _return_value=r2)
        callback.on_job_end(job_config(job_dir, num), job)
        assert job.status == JobStatus.COMPLETED  # the basic sweeper must not re-raise it
    assert "error: job 1 (lr=0.2) failed: lr bad" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        callback.on_multirun_end(job_config(tmp_path / "0", 0))
    assert exit_info.value.code == 1
    assert [(job["job"], job["status"]) for job in summary(tmp_path)] == [(2, "completed"), (0, "completed"),
                                                                          (1, "failed")]  # fmt: skip
    table = capsys.readouterr().out
    assert table.splitlines()[1].split() == ["job", "status", "lr", "val/r2_best", "test/r2"]
    assert table.splitlines()[2].split() == ["2", "ok", "0.3", "0.9000", "0.9000"]


def test_other_sweepers_see_the_failure(tmp_path):
    """Optuna (and any sweeper but the basic one) gets the failed JobReturn as it is, and tells the study FAIL."""
    callback = SweepSummary(metric="val/r2_best")
    job = JobReturn(overrides=["lr=0.2"], status=JobStatus.FAILED, _return_value=UserError("lr bad"))
    callback.on_job_end(job_config(tmp_path, 0, sweeper="hydra_plugins.x.OptunaSweeper"), job)
    assert job.status == JobStatus.FAILED


def test_single_runs_are_left_alone(tmp_path):
    """In a plain run the callbacks write nothing and change no JobReturn."""
    config = job_config(tmp_path, 0)
    config.hydra.mode = RunMode.RUN
    job = JobReturn(overrides=[], status=JobStatus.FAILED, _return_value=UserError("x"))
    SweepSummary().on_job_end(config, job)
    assert job.status == JobStatus.FAILED and not any(tmp_path.iterdir())


def run_summary(tmp_path: Path, jobs: list[tuple[list[str], dict | None]], metric: str = "val/r2_best") -> dict:
    """The summary of finished jobs (overrides, metrics; None: failed), as on_multirun_end writes it."""
    callback = SweepSummary(metric=metric, direction="max", exit_on_failure=False)
    callback.on_multirun_start(job_config(tmp_path / "0", 0))
    for num, (overrides, values) in enumerate(jobs):
        job_dir = tmp_path / str(num)
        job_dir.mkdir(parents=True)
        if values is None:
            job = JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=UserError("bad"))
        else:
            (job_dir / "metrics.json").write_text(json.dumps(values))
            job = JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=values[metric])
        callback.on_job_end(job_config(job_dir, num), job)
    callback.on_multirun_end(job_config(tmp_path / "0", 0))
    return json.loads((tmp_path / "summary.json").read_text())


def test_jobs_that_differ_only_in_seed_form_groups_with_mean_std_min_max_n(tmp_path, capsys):
    """-m seed=1,2,3 lr=a,b: two groups of three, the better mean first, each metric's sample std (n - 1) as
    statistics.stdev gives it; a failed seed is counted apart and averaged nowhere."""
    import statistics

    r2s = {"0.1": [0.90, 0.92, 0.97], "0.2": [0.95, 0.96, None]}
    jobs = [([f"seed={seed}", f"lr={lr}"], None if r2 is None else {"val/r2_best": r2, "test/r2": r2 - 0.01})
            for lr, values in r2s.items() for seed, r2 in zip((1, 2, 3), values, strict=True)]  # fmt: skip
    report = run_summary(tmp_path, jobs)
    assert report["replicate_keys"] == ["seed"]
    first, second = report["groups"]
    assert (first["overrides"], first["n"], first["failed"], first["jobs"]) == (["lr=0.2"], 2, 1, [3, 4, 5])
    assert (second["overrides"], second["n"], second["failed"]) == (["lr=0.1"], 3, 0)
    got = second["metrics"]["val/r2_best"]
    assert got["mean"] == pytest.approx(statistics.fmean(r2s["0.1"]))
    assert got["std"] == pytest.approx(statistics.stdev(r2s["0.1"]))
    assert (got["min"], got["max"], got["n"]) == (0.90, 0.97, 3)
    assert second["metrics"]["test/r2"]["mean"] == pytest.approx(statistics.fmean(r2s["0.1"]) - 0.01)

    out = capsys.readouterr().out
    title, header, *rows = out[out.index("Groups over seed") :].splitlines()[:4]
    assert title.startswith("Groups over seed: 2 groups") and "val/r2_best (maximize)" in title
    assert header.split() == ["group", "lr", "n", "failed", "val/r2_best", "min", "max", "test/r2"]
    assert rows[0].split()[:5] == ["1", "0.2", "2", "1", f"{statistics.fmean([0.95, 0.96]):.4f}"]
    with open(tmp_path / "groups.csv", newline="") as file:
        table = list(csv.DictReader(file))
    assert [row["lr"] for row in table] == ["0.2", "0.1"] and table[1]["jobs"] == "0 1 2"
    assert float(table[1]["val/r2_best_std"]) == pytest.approx(statistics.stdev(r2s["0.1"]))


def test_folds_of_one_setting_form_one_group_and_a_sweep_without_replicates_has_none(tmp_path):
    """data.fold=0..4 with the other keys fixed: one group of five (the cross-validated mean); a sweep that varies no
    replicate key writes no groups.csv and lists no groups."""
    folds = [([f"data.fold={k}", "data.num_folds=5"], {"val/r2_best": 0.9 + k / 100}) for k in range(5)]
    (group,) = run_summary(tmp_path / "folds", folds)["groups"]
    assert group["n"] == 5 and group["metrics"]["val/r2_best"]["mean"] == pytest.approx(0.92)

    plain = [([f"lr={lr}", "seed=1"], {"val/r2_best": 0.9}) for lr in (0.1, 0.2)]
    report = run_summary(tmp_path / "plain", plain)
    assert report["groups"] == [] and not (tmp_path / "plain" / "groups.csv").exists()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("test/acc", True), ("test_acc", True), ("testAcc", True), ("test-acc", True), ("test.acc", True),
     ("TestAcc", True), ("testing_time", False), ("test", False), ("val_acc", False), ("latest/acc", False)],
)  # fmt: skip
def test_a_test_metric_is_test_and_a_separator_or_a_capital(name, expected):
    assert is_test_metric(name) is expected


def test_the_tables_show_the_test_metrics_of_any_naming_ranked_by_monitor(tmp_path, capsys):
    """A module that logs test_acc, testAcc or test-loss (not test/...) gets them in the printed table and the groups
    table beside the sort metric (val_acc, maximized), best first; other metrics stay in summary.csv only."""
    metrics = [{"val_acc": val, "test_acc": val - 0.1, "testAcc": val - 0.2, "test-loss": 1 - val, "train_loss": 0.5,
                "testing_s": 3.0} for val in (0.5, 0.9, 0.7, 0.8)]  # fmt: skip
    jobs = [([f"seed={seed}", f"lr={lr}"], metrics[2 * i + j]) for i, lr in enumerate((0.1, 0.2))
            for j, seed in enumerate((1, 2))]  # fmt: skip
    report = run_summary(tmp_path, jobs, metric="val_acc")
    assert [job["job"] for job in report["jobs"]] == [1, 3, 2, 0]
    out = capsys.readouterr().out
    title, header, first = out.splitlines()[:3]
    assert title.endswith("best first by val_acc (maximize)")
    assert header.split() == ["job", "status", "seed", "lr", "val_acc", "test-loss", "testAcc", "test_acc"]
    assert first.split() == ["1", "ok", "2", "0.1", "0.9000", "0.1000", "0.7000", "0.8000"]
    groups = out[out.index("Groups over seed") :].splitlines()[1].split()
    assert [name for name in groups if name.startswith(("val", "test"))] == ["val_acc", "test-loss", "testAcc",
                                                                            "test_acc"]  # fmt: skip
    with open(tmp_path / "summary.csv", newline="") as file:
        assert {"train_loss", "testing_s"} <= set(next(csv.reader(file)))


def test_parallel_jobs_get_gpus_of_their_own_and_never_share_one():
    """n_jobs=2 on 4 GPUs: slots 0 and 1 get GPUs 0,1 and 2,3; on 3 GPUs one each; more jobs than GPUs is refused
    (two jobs would share one), with the n_jobs to use."""
    assert [slot_gpus(slot, 2, ["0", "1", "2", "3"]) for slot in (0, 1)] == [["0", "1"], ["2", "3"]]
    assert [slot_gpus(slot, 2, ["4", "6", "7"]) for slot in (0, 1)] == [["4"], ["6"]]
    assert slot_gpus(1, 2, []) == []  # a CPU machine: threads only
    with pytest.raises(UserError, match=r"hydra\.launcher\.n_jobs=3 runs 3 jobs at once on 2 GPU\(s\).*n_jobs <= 2"):
        slot_gpus(0, 3, ["0", "1"])


def test_a_worker_takes_a_free_slot_and_keeps_it(tmp_path, monkeypatch):
    """Slot 0 held by another worker (a lock on its own open file): this one takes slot 1, and every later job of
    this worker in the same sweep gets slot 1 again."""
    monkeypatch.setattr(share, "_held", None)
    folder = share.slots_dir(str(tmp_path))
    folder.mkdir(exist_ok=True)
    with open(folder / "0.lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert share.take_slot(str(tmp_path), 2) == 1
        assert share.take_slot(str(tmp_path), 2) == 1
    monkeypatch.setattr(share, "_held", None)


def test_a_parallel_job_runs_with_its_slots_threads_and_gpus(tmp_path, monkeypatch):
    """on_job_start of a joblib job (n_jobs=2): cores // 2 torch threads, OMP_NUM_THREADS for its DDP ranks, and its
    slot's GPUs in CUDA_VISIBLE_DEVICES; a sequential sweep is left alone."""
    monkeypatch.setattr(share, "_held", None)
    monkeypatch.setattr(share, "visible_gpus", lambda: ["0", "1", "2", "3"])
    monkeypatch.setattr(share, "cpu_count", lambda: 2)
    for name in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.setenv(name, "")  # recorded as it was, so what the job sets goes at teardown, unset or not
        monkeypatch.delenv(name)
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    config = job_config(tmp_path / "0", 0)
    share.MachineShare().on_job_start(config)
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None and calls == []  # no n_jobs: the basic launcher
    config.hydra.launcher = {"n_jobs": 2}
    share.MachineShare().on_job_start(config)
    assert (os.environ["CUDA_VISIBLE_DEVICES"], os.environ["OMP_NUM_THREADS"], calls) == ("0,1", "1", [1])
    monkeypatch.setattr(share, "_held", None)
