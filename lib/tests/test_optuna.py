"""hydralight's Optuna sweeper (hydra_plugins.hydralight_optuna) as users run it: pruning, one study shared by several
processes (sqlite, PostgreSQL, a journal file), a worker killed mid-trial whose trial another worker runs again, and
optuna-dashboard reading a study; then its pieces, without a subprocess.

The searches run hydralight.testing's regression (`hparams_search=regression_optuna`, or a search written here) as
`python train.py ...` in the testing project. Everything skips without the sweeps extra; the PostgreSQL tests start a
throwaway server of their own (initdb in a temp dir) and skip, saying why, where none can be started; the dashboard
test skips without optuna-dashboard.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from hydralight.core.errors import UserError
from hydralight.core.sweeps.summary import SweepSummary
from hydralight.testing import QUICK, assert_ok, run_cli, warm, write_project
from hydralight.testing.contract import free_port
from hydralight.testing.postgres import NoServer, throwaway_server

pytestmark = pytest.mark.sweeps
optuna = pytest.importorskip("optuna", reason="needs the sweeps extra: pip install -e './lib[sweeps]'")
search = pytest.importorskip("hydralight.core.sweeps.optuna")
TrialState = optuna.trial.TrialState

TINY = (*QUICK, "logger=none")
# A search whose pruning is certain: lr 1e-5 leaves val/loss near its start (> 1.0) after epoch 1, lr 0.05 brings it
# well under; the threshold pruner stops a trial above 1.0 from epoch 1 on. A grid sampler runs each lr once.
THRESHOLD_SEARCH = """\
# @package _global_
defaults:
  - override /hydra/sweeper: optuna
resume: never
callbacks:
  optuna_pruning:
    _target_: hydralight.core.sweeps.pruning.OptunaPruning
    monitor: ${monitor}
hydra:
  mode: MULTIRUN
  sweeper:
    direction: ${mode}imize
    study_name: threshold
    n_trials: 2
    max_failure_rate: 1.0
    sampler:
      _target_: optuna.samplers.GridSampler
      search_space: {model.lr: [0.00001, 0.05]}
    pruner:
      _target_: optuna.pruners.ThresholdPruner
      upper: 1.0
      n_warmup_steps: 1
    params:
      model.lr: choice(0.00001, 0.05)
"""


def search_project(root: Path) -> Path:
    """The testing project in root/project, with the threshold search as hparams_search=threshold."""
    project = write_project(root / "project")
    (project / "conf" / "hparams_search" / "threshold.yaml").write_text(THRESHOLD_SEARCH)
    return project


def worker_args(root: Path, name: str, storage: str, *args: str) -> list[str]:
    """The overrides of one `python train.py hparams_search=regression_optuna ...` worker on `storage`."""
    return ["hparams_search=regression_optuna", *TINY, f"hydra.sweeper.storage={storage}",
            f"hydra.sweep.dir={root / name}", f"paths.log_dir={root / 'outputs'}", *args]  # fmt: skip


def start(project: Path, args: list[str], log: Path) -> object:
    """`python train.py <args>` in `project`, not waited for; its output in log.out/log.err."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    out, err = open(log.with_suffix(".out"), "w"), open(log.with_suffix(".err"), "w")  # noqa: SIM115
    return warm.popen([sys.executable, "train.py", *args], project, env, out, err)


def finished(process: object, log: Path, timeout: float = 240) -> None:
    process.wait(timeout=timeout)
    assert process.returncode == 0, f"exit {process.returncode}\n{log.with_suffix('.err').read_text()[-6000:]}"


def summary(sweep_dir: Path) -> list[dict]:
    return json.loads((sweep_dir / "summary.json").read_text())["jobs"]


def test_a_pruned_trial_stops_saves_and_ranks_after_the_completed_ones(tmp_path):
    """lr=1e-5 is pruned at epoch 1 of 4: its job ends that epoch with last.ckpt and metrics.json, the study has it
    PRUNED with its two reported values, the summary says pruned@1 and ranks it after the completed trial, and the
    sweep exits 0."""
    project = search_project(tmp_path)
    dirs = (f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.log_dir={tmp_path / 'outputs'}")
    result = run_cli("train.py", "hparams_search=threshold", *TINY, "trainer.max_epochs=4", *dirs, cwd=project)
    assert_ok(result)
    jobs = summary(tmp_path / "sweep")
    assert [(job["status"], job["params"]["model.lr"]) for job in jobs] == [("completed", 0.05), ("pruned", 1e-05)]
    pruned = jobs[1]
    assert pruned["pruned_epoch"] == 1 and pruned["state"] == "PRUNED"
    assert {"val/loss_best", "test/loss"} <= pruned["metrics"].keys()  # tested like any run
    job_dir = Path(pruned["dir"])
    assert (job_dir / "checkpoints" / "last.ckpt").is_file()
    assert "pruned at epoch 1" in (job_dir / "train.log").read_text()
    storage = search.open_storage(search.storage_url(None, tmp_path / "sweep"))
    study = optuna.load_study(study_name="threshold", storage=storage)
    by_lr = {trial.params["model.lr"]: trial for trial in study.trials}
    assert by_lr[1e-05].state == TrialState.PRUNED and sorted(by_lr[1e-05].intermediate_values) == [0, 1]
    assert by_lr[0.05].state == TrialState.COMPLETE and sorted(by_lr[0.05].intermediate_values) == [0, 1, 2, 3]
    assert by_lr[0.05].value == pytest.approx(jobs[0]["metrics"]["val/loss_best"])
    assert by_lr[1e-05].user_attrs["job_dir"] == str(job_dir)
    assert "Sweep summary: 2 jobs, 1 ok, 1 pruned, 0 failed; best first by val/loss_best (minimize)" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "pruned@1" in line)
    assert row.split()[:2] == [str(pruned["job"]), "pruned@1"]  # no trial column: trial k is job k here
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert results.best_params == {"model.lr": 0.05} and results.trials.this_sweep == 2


@pytest.mark.slow
def test_a_ddp_trial_is_pruned_on_every_rank_at_once(tmp_path):
    """Two ranks per trial: rank 0 reports and asks, both stop at epoch 1 (a rank that went on would hang the job),
    and rank 1 joined the pruned job."""
    project = search_project(tmp_path)
    result = run_cli("train.py", "hparams_search=threshold", *TINY, "trainer.max_epochs=4", "strategy=ddp",
                     "trainer.devices=2", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     f"paths.log_dir={tmp_path / 'outputs'}", cwd=project, timeout=300)  # fmt: skip
    assert_ok(result)
    jobs = {job["params"]["model.lr"]: job for job in summary(tmp_path / "sweep")}
    assert jobs[1e-05]["status"] == "pruned" and jobs[1e-05]["pruned_epoch"] == 1
    assert jobs[0.05]["status"] == "completed"
    log = (Path(jobs[1e-05]["dir"]) / "train.log").read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log and "pruned at epoch 1" in log


@pytest.mark.slow
def test_trials_run_by_joblib_workers_are_pruned_there(tmp_path):
    """hydra/launcher=joblib with n_jobs=2: both trials run at once in joblib's worker processes, which reach the
    sweep dir's study to report; the one that falls behind is pruned there, and the sweeper tells the study so."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="needs the joblib launcher (sweeps extra)")
    project = search_project(tmp_path)
    result = run_cli("train.py", "hparams_search=threshold", *TINY, "trainer.max_epochs=4", "hydra/launcher=joblib",
                     "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     f"paths.log_dir={tmp_path / 'outputs'}", cwd=project)  # fmt: skip
    assert_ok(result)
    jobs = {job["params"]["model.lr"]: job for job in summary(tmp_path / "sweep")}
    assert (jobs[1e-05]["status"], jobs[1e-05]["pruned_epoch"], jobs[0.05]["status"]) == ("pruned", 1, "completed")


# One study, many workers.


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server for the module (hydralight.testing.postgres); yields `new_database()`, the URL
    of a new empty database. Skips, saying why, where no server can be started."""
    pytest.importorskip("psycopg", reason="needs the sweeps extra (psycopg)")
    try:
        with throwaway_server() as new_database:
            yield new_database
    except NoServer as why:
        pytest.skip(str(why))


def two_workers_share_one_study(root: Path, storage: str, trials: int = 3) -> None:
    """Two `python train.py hparams_search=regression_optuna` started at once on `storage`: the study holds
    2 x `trials` distinct trials, each run by exactly one of them, all finished."""
    project = write_project(root / "project")
    workers = {name: start(project, worker_args(root, name, storage, f"hydra.sweeper.n_trials={trials}"), root / name)
               for name in ("a", "b")}  # fmt: skip
    for name, process in workers.items():
        finished(process, root / name)
    study = optuna.load_study(study_name="regression_optuna", storage=search.open_storage(storage))
    assert sorted(trial.number for trial in study.trials) == list(range(2 * trials))
    assert all(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in study.trials), study.trials
    ran = [job["trial"] for name in workers for job in summary(root / name)]
    assert sorted(ran) == list(range(2 * trials)), ran  # no trial twice, none lost
    for name in workers:
        assert len(summary(root / name)) == trials


def test_two_processes_share_one_postgresql_study(postgres, tmp_path):
    two_workers_share_one_study(tmp_path, postgres())


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tmp_path):
    """The same on one machine's sqlite file (a journal file is shared the same way by the joblib test's workers)."""
    two_workers_share_one_study(tmp_path, f"sqlite:///{tmp_path / 'db' / 'study.db'}")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # the retry callback's
def test_a_worker_killed_mid_trial_has_its_trial_run_again(tmp_path):
    """Worker a is killed (SIGKILL) while its trial trains; it stops beating, and worker b, started after the grace
    period, fails that trial and runs it again with the same parameters: the study completes."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    beat = ("hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2")
    project = write_project(tmp_path / "project")
    args = worker_args(tmp_path, "a", storage, *beat, "hydra.sweeper.n_trials=1", "trainer.max_epochs=100000")
    worker = start(project, args, tmp_path / "a")
    deadline = time.monotonic() + 180
    while True:  # until its trial has reported an epoch: training, mid-trial
        assert worker.poll() is None, (tmp_path / "a.err").read_text()[-3000:]
        assert time.monotonic() < deadline, "worker a never started training"
        if (tmp_path / "study.db").is_file():
            try:  # worker a may still be making the tables and the study
                trials = optuna.load_study(study_name="regression_optuna", storage=search.open_storage(storage)).trials
            except KeyError:
                trials = []
            if trials and trials[0].intermediate_values:
                break
        time.sleep(0.5)
    worker.kill()
    worker.wait(timeout=60)
    killed = optuna.load_study(study_name="regression_optuna", storage=storage).trials[0]
    assert killed.state == TrialState.RUNNING
    time.sleep(3)  # past the grace period
    finished(start(project, worker_args(tmp_path, "b", storage, *beat, "hydra.sweeper.n_trials=1"), tmp_path / "b"),
             tmp_path / "b")  # fmt: skip
    first, again = optuna.load_study(study_name="regression_optuna", storage=storage).trials
    assert first.state == TrialState.FAIL
    assert again.state == TrialState.COMPLETE and again.params == killed.params
    assert optuna.storages.RetryFailedTrialCallback.retried_trial_number(again) == killed.number
    assert summary(tmp_path / "b")[0]["trial"] == again.number


# Seeing a study.


def test_optuna_dashboard_serves_the_trials_of_a_study(tmp_path):
    """`optuna-dashboard sqlite:///<file>` on loopback: its HTTP API lists the study and its trials, states and
    parameters as the storage has them."""
    pytest.importorskip("optuna_dashboard", reason="needs the dashboard extra: pip install -e './lib[dashboard]'")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="seen", storage=storage, direction="minimize")
    for lr in (0.1, 0.01):
        study.enqueue_trial({"model.lr": lr})
        trial = study.ask({"model.lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)})
        study.tell(trial, lr * 10)
    study.tell(study.ask(), state=TrialState.FAIL)
    command = shutil.which("optuna-dashboard", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert command, "optuna_dashboard is installed without its optuna-dashboard command"
    port = free_port()
    dashboard = subprocess.Popen([command, storage, "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as response:
                    studies = json.loads(response.read())["study_summaries"]
                break
            except OSError:
                assert dashboard.poll() is None and time.monotonic() < deadline, dashboard.communicate()[0][-3000:]
                time.sleep(0.3)
        (summary_,) = studies
        assert summary_["study_name"] == "seen"
        with urllib.request.urlopen(f"{base}/api/studies/{summary_['study_id']}", timeout=10) as response:
            trials = json.loads(response.read())["trials"]
        assert [trial["state"] for trial in trials] == ["Complete", "Complete", "Fail"]
        assert [trial["params"][0]["param_internal_value"] for trial in trials[:2]] == [0.1, 0.01]
    finally:
        dashboard.send_signal(signal.SIGINT)
        try:
            dashboard.wait(timeout=10)
        except subprocess.TimeoutExpired:
            dashboard.kill()
            dashboard.wait()


# The pieces.


def parsed(line: str):
    return OverridesParser.create().parse_override(line)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a=choice(adam, sgd)", optuna.distributions.CategoricalDistribution(["adam", "sgd"])),
        ("a=1,2,3", optuna.distributions.CategoricalDistribution([1, 2, 3])),
        ('a=choice("[64,64]", "[128,64]")', optuna.distributions.CategoricalDistribution(["[64,64]", "[128,64]"])),
        ("a=range(1, 10, 3)", optuna.distributions.IntDistribution(1, 7, step=3)),  # 1, 4, 7: 10 excluded, as Hydra
        ("a=range(0.1, 0.5, 0.1)", optuna.distributions.FloatDistribution(0.1, 0.4, step=0.1)),
        ("a=interval(0, 1)", optuna.distributions.FloatDistribution(0.0, 1.0)),
        ("a=tag(log, interval(1e-4, 1e-1))", optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)),
        ("a=tag(int, interval(1, 64))", optuna.distributions.IntDistribution(1, 64)),
        ("a=tag(int, log, interval(1, 64))", optuna.distributions.IntDistribution(1, 64, log=True)),
        ("a=shuffle(range(1, 4))", optuna.distributions.CategoricalDistribution([1, 2, 3])),
    ],
)  # fmt: skip
def test_hydra_sweep_syntax_becomes_the_optuna_distribution(line, expected):
    got = search.distribution(parsed(line))
    assert type(got) is type(expected)
    if isinstance(expected, optuna.distributions.CategoricalDistribution):
        assert sorted(got.choices) == sorted(expected.choices)
    else:
        assert (got.low, got.high, got.log) == pytest.approx((expected.low, expected.high, expected.log))
        assert got.step == pytest.approx(expected.step) if expected.step else got.step is None


def test_list_choices_are_refused_with_the_string_form_to_use():
    with pytest.raises(UserError, match=r'a: choices must be numbers or strings.*choice\("\[64,64\]"'):
        search.distribution(parsed("a=choice([1,2],[3,4])"))


def test_the_command_line_searches_and_pins_keys_of_the_config_space():
    """params from the config, then the command line: a sweep there is searched too (replacing the config's), a
    plain value there pins the key, and every other override is passed to each trial as typed."""
    params = {"model.lr": "tag(log, interval(1e-4, 1e-1))", "data.batch_size": "choice(8, 16)", "seed": 3}
    space = search.search_space(params, ["data.batch_size=32", "model.net.hidden=choice(4, 8)", "trainer.max_epochs=2"])
    assert list(space.distributions) == ["model.lr", "model.net.hidden"]
    assert space.fixed == ["seed=3", "data.batch_size=32", "trainer.max_epochs=2"]
    overrides = space.overrides({"model.lr": 0.01, "model.net.hidden": 8})
    assert overrides == ["seed=3", "data.batch_size=32", "trainer.max_epochs=2", "model.lr=0.01", "model.net.hidden=8"]
    assert [search.override_value(value) for value in (True, None, "[64,64]", 1e-05)] == ["true", "null", "[64,64]",
                                                                                         "1e-05"]  # fmt: skip


def test_samplers_and_pruners_by_name_or_class_and_clear_errors():
    assert isinstance(search.build_sampler("random", seed=1), optuna.samplers.RandomSampler)
    tpe = search.build_sampler({"_target_": "optuna.samplers.TPESampler", "n_startup_trials": 3}, seed=None)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert isinstance(search.build_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    assert isinstance(search.build_pruner(None), optuna.pruners.NopPruner)
    with pytest.raises(UserError, match=r"hydra.sweeper.pruner='medain' is not valid. Choose one of: median, "):
        search.build_pruner("medain")
    with pytest.raises(UserError, match=r"hydra.sweeper.sampler: TPESampler\(.*n_startup\b"):
        search.build_sampler({"_target_": "optuna.samplers.TPESampler", "n_startup": 3}, seed=None)
    spec = {"_target_": "optuna.samplers.TPESampler", "seed": 7}
    assert search.sampler_seed(spec, None) == 7 and "seed" not in spec  # the sweeper seeds each trial's sampler


def test_a_missing_sampler_package_is_named_with_its_install(monkeypatch):
    monkeypatch.setattr(search.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"hydra.sweeper.sampler=gp needs scipy: pip install scipy"):
        search.build_sampler("gp", seed=None)


def test_a_seeded_search_repeats_itself_and_a_continued_study_samples_anew():
    space = search.search_space({"x": "interval(0, 1)"}, [])

    def run(study, n):
        values = []
        for _ in range(n):
            trial = search.ask(study, space, "random", seed=5)
            values.append(trial.params["x"])
            study.tell(trial, 0.0)
        return values

    first = run(optuna.create_study(), 3)
    assert run(optuna.create_study(), 3) == first
    continued = optuna.create_study()
    run(continued, 3)
    assert not set(run(continued, 3)) & set(first)


def test_storages_urls_labels_and_errors(tmp_path):
    assert search.storage_url(None, tmp_path) == f"journal:{tmp_path / 'optuna.journal'}"
    assert search.storage_url("sqlite:///a.db", tmp_path) == "sqlite:///a.db"
    assert search.storage_label("postgresql://me:secret@db.host/optuna") == "postgresql://me:***@db.host/optuna"
    assert isinstance(search.open_storage(f"journal:{tmp_path / 'j' / 'study.log'}"), optuna.storages.JournalStorage)
    storage = search.open_storage(f"sqlite:///{tmp_path / 'new' / 'study.db'}", heartbeat_interval=5)
    assert search.heartbeat_enabled(storage)  # and the folder was made
    with pytest.raises(UserError, match=r"hydra.sweeper.storage='optuna.db' is not a storage. Use sqlite:///"):
        search.open_storage("optuna.db")
    with pytest.raises(UserError, match=r"postgresql://me:\*\*\*@127.0.0.1:1/x: cannot open it"):
        search.open_storage("postgresql://me:secret@127.0.0.1:1/x")


def test_a_postgresql_url_gets_the_installed_driver(monkeypatch):
    """SQLAlchemy 2.0 reads postgresql:// as psycopg2, which the sweeps extra does not bring: psycopg (3) is named."""
    installed = {"psycopg"}
    monkeypatch.setattr(search.importlib.util, "find_spec", lambda name: object() if name in installed else None)
    assert search.with_installed_driver("postgresql://me@host/db") == "postgresql+psycopg://me@host/db"
    installed.add("psycopg2")
    assert search.with_installed_driver("postgresql://me@host/db") == "postgresql://me@host/db"
    assert search.with_installed_driver("postgresql+pg8000://me@host/db") == "postgresql+pg8000://me@host/db"


def test_a_study_of_the_other_direction_is_refused(tmp_path):
    storage = search.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    search.open_study(storage, "s", "maximize", None, None)
    with pytest.raises(UserError, match=r"the study 's' in this storage maximizes .* would minimize it \(mode=min\)"):
        search.open_study(storage, "s", "minimize", None, None)
    with pytest.raises(UserError, match=r"hydra.sweeper.direction='up' is not valid"):
        search.open_study(storage, "t", "up", None, None)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_retrying_a_dead_workers_trial_is_configured_for_this_optuna():
    from hydralight.compat.optuna import retry_stale_trials

    ((keyword, callback),) = retry_stale_trials(2).items()
    assert keyword in ("heartbeat_stale_trial_callback", "failed_trial_callback") and callback._max_retry == 2


def test_the_sweeper_is_hydra_sweeper_optuna():
    """hparams_search configs choose `override /hydra/sweeper: optuna`: hydralight's, found by Hydra's plugin scan."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    import hydra_plugins.hydralight_optuna as plugin

    node = ConfigStore.instance().load("hydra/sweeper/optuna.yaml").node
    assert node._target_ == "hydra_plugins.hydralight_optuna.OptunaSweeper"
    sweepers = {f"{cls.__module__}.{cls.__name__}" for cls in Plugins.instance().discover(Sweeper)}
    assert node._target_ in sweepers and plugin.OptunaSweeper.__name__ == "OptunaSweeper"


def job_config(output_dir: Path, num: int):
    return OmegaConf.create({
        "hydra": {"mode": RunMode.MULTIRUN, "runtime": {"output_dir": str(output_dir)}, "job": {"num": num},
                  "sweeper": {"_target_": "hydra_plugins.hydralight_optuna.OptunaSweeper"},
                  "sweep": {"dir": str(output_dir.parent)}, "overrides": {"task": ["lr=choice(0.1,0.2,0.3)"]}},
    })  # fmt: skip


def test_the_summary_shows_each_trial_and_ranks_a_pruned_one_after_the_completed(tmp_path, capsys):
    """job.json of each job as the sweeper leaves it (trial, state, params; pruned with its epoch): the table has a
    trial column and pruned@<epoch>, a pruned trial ranks after every completed one however good its metric, and a
    pruned trial is no failure (exit 0)."""
    study = optuna.create_study(direction="maximize")
    study.tell(study.ask(), 0.1)  # a trial of another process: this sweep's job k is trial k + 1
    callback = SweepSummary(metric="val/r2_best", direction="max")
    callback.on_multirun_start(job_config(tmp_path / "0", 0))
    for num, (r2, pruned) in enumerate(((0.5, False), (0.95, True), (0.9, False))):
        job_dir = tmp_path / str(num)
        job_dir.mkdir()
        (job_dir / "metrics.json").write_text(json.dumps({"val/r2_best": r2}))
        config = job_config(job_dir, num)
        job = JobReturn(overrides=[f"lr=0.{num + 1}"], status=JobStatus.COMPLETED, _return_value=r2,
                        hydra_cfg=config)  # fmt: skip
        callback.on_job_end(config, job)
        trial = study.ask({"lr": optuna.distributions.CategoricalDistribution([0.1, 0.2, 0.3])})
        if pruned:
            trial.report(r2, step=0)
            trial.set_user_attr(search.PRUNED_EPOCH, 2)
        search.record_trial(job, search.tell(study, trial, job)[0])
    callback.on_multirun_end(job_config(tmp_path / "0", 0))  # no SystemExit: nothing failed
    jobs = summary(tmp_path)
    assert [(job["job"], job["status"], job["state"]) for job in jobs] == [
        (2, "completed", "COMPLETE"), (0, "completed", "COMPLETE"), (1, "pruned", "PRUNED")]  # fmt: skip
    out = capsys.readouterr().out
    assert "Sweep summary: 3 jobs, 2 ok, 1 pruned, 0 failed" in out
    table = out.splitlines()
    header = next(line for line in table if line.startswith("job"))
    assert header.split() == ["job", "trial", "status", "lr", "val/r2_best"]
    assert table[table.index(header) + 3].split() == ["1", "2", "pruned@2", "0.2", "0.9500"]
    header, *rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert header.endswith(",trial,pruned_epoch") and rows[2].endswith(",2,2")


# The study's plots at the end of a sweep.

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small_study(n_trials: int = 20, params: tuple[str, ...] = ("x", "noise")) -> optuna.Study:
    """value = x, whatever `noise` is; trial 2 is pruned after reporting once."""

    def objective(trial: optuna.Trial) -> float:
        values = {name: trial.suggest_float(name, 0.0, 1.0) for name in params}
        if trial.number == 2:
            trial.report(values[params[0]], step=0)
            raise optuna.TrialPruned()
        return values[params[0]]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=n_trials)
    return study


def test_an_optuna_sweep_draws_its_metric_per_trial_and_its_parameter_importance(tmp_path):
    """Both PNGs land in the sweep dir and the report names them; the parameter that sets the value ranks first."""
    pytest.importorskip("matplotlib", reason="needs the plots extra: pip install -e './lib[plots]'")
    from hydralight.core.sweeps import optuna_plots as plots

    study = small_study()
    assert study.trials[2].state == TrialState.PRUNED
    lines = plots.plot_study(study, tmp_path, "val/acc")
    paths = [tmp_path / plots.METRIC_PNG, tmp_path / plots.IMPORTANCE_PNG]
    assert lines == [f"Written: {path}" for path in paths]
    assert all(path.read_bytes().startswith(PNG_MAGIC) for path in paths)
    importances = plots.param_importances(study)
    assert list(importances) == ["x", "noise"] and importances["x"] > 0.9 > 0.1 > importances["noise"]
    report = search.report(study, study.trials, "in memory", tmp_path, "val/acc")
    assert report.splitlines()[-2:] == lines


def test_too_few_trials_or_one_parameter_say_why_there_is_no_importance_plot(tmp_path):
    pytest.importorskip("matplotlib", reason="needs the plots extra: pip install -e './lib[plots]'")
    from hydralight.core.sweeps import optuna_plots as plots

    lines = plots.plot_study(small_study(n_trials=1), tmp_path, None)
    assert lines[1] == "No parameter-importance plot: 1 complete trial, it needs 2 or more"
    lines = plots.plot_study(small_study(params=("x",)), tmp_path, None)
    assert lines[1] == "No parameter-importance plot: one parameter searched (x), nothing to compare it with"
    assert not (tmp_path / plots.IMPORTANCE_PNG).exists()


def test_without_matplotlib_the_report_says_what_to_install(tmp_path, monkeypatch):
    from hydralight.core.sweeps import optuna_plots as plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert plots.plot_study(small_study(), tmp_path, "val/acc") == [plots.MATPLOTLIB_MISSING]
    assert 'pip install -e ".[plots]"' in plots.MATPLOTLIB_MISSING and not any(tmp_path.iterdir())
