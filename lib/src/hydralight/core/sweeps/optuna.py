"""Optuna's side of hydralight's sweeper (hydra_plugins.hydralight_optuna): the search space from Hydra's override
syntax, the sampler, pruner and storage that `hydra.sweeper` names, the heartbeat of a worker's running trials, the
trial a job reports to, and what the sweep summary learns of each trial.

A study is shared by every process that runs a search with the same `hydra.sweeper.storage` and `study_name`: each
asks the storage for its next trial, so several processes, on one machine (sqlite, a journal file) or several
(PostgreSQL, a journal file on a shared filesystem), run one search with no trial run twice. Without a storage the
study is a journal file in the sweep dir: the jobs a launcher runs in other processes reach it too.
"""

import importlib.util
import json
import logging
import math
import random
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import get_class
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hydralight.compat.hydra import job_return_value
from hydralight.compat.optuna import retry_stale_trials
from hydralight.core import files
from hydralight.core.errors import UserError, choices_message
from hydralight.core.sweeps.groups import finite_number
from hydralight.core.sweeps.optuna_plots import plot_study
from hydralight.core.sweeps.storage import sqlite_path
from hydralight.core.sweeps.summary import JOB_RECORD

log = logging.getLogger(__name__)

# hydra.sweeper.sampler / .pruner by name; a mapping with `_target_` (and arguments) names any other class.
SAMPLERS = {
    "tpe": "optuna.samplers.TPESampler",
    "random": "optuna.samplers.RandomSampler",
    "cmaes": "optuna.samplers.CmaEsSampler",
    "gp": "optuna.samplers.GPSampler",
    "qmc": "optuna.samplers.QMCSampler",
}
PRUNERS = {
    "median": "optuna.pruners.MedianPruner",
    "successive_halving": "optuna.pruners.SuccessiveHalvingPruner",
    "hyperband": "optuna.pruners.HyperbandPruner",
    "none": "optuna.pruners.NopPruner",
}
# What a sampler imports when it first samples: checked before the first trial, with the install that brings it.
SAMPLER_NEEDS = {"cmaes": ("cmaes", "pip install cmaes"), "gp": ("scipy", "pip install scipy"),
                 "qmc": ("scipy", "pip install scipy")}  # fmt: skip
JOURNAL = "journal:"  # hydra.sweeper.storage=journal:<file>: Optuna's journal file (NFS-safe lock)
SWEEP_JOURNAL = "optuna.journal"  # the study of a search without a storage, in its sweep dir
RESULTS = "optimization_results.yaml"
# Trial user attributes (shown by optuna-dashboard too).
PRUNED_EPOCH = "pruned_epoch"  # the epoch whose validation stopped a pruned trial (set by its job)
JOB_DIR = "job_dir"  # the trial's run dir
ERROR = "error"  # why a failed trial failed
STOPPED = "stopped"  # the trial was running when its sweep was stopped (it was queued again)
STORAGE_HELP = "sqlite:///<file>.db, postgresql://<user>:<password>@<host>/<database>, or journal:<file>"


def build(spec: Any, kind: str, names: Mapping[str, str], **extra: Any) -> Any:
    """A sampler or pruner from `hydra.sweeper.<kind>`: one of `names`, or a mapping of `_target_` and arguments."""
    if spec is None and kind == "pruner":
        spec = "none"
    if isinstance(spec, str):
        if spec not in names:
            raise UserError(choices_message(f"hydra.sweeper.{kind}", spec, [*names, "{_target_: <class>, ...}"]))
        target, kwargs = names[spec], {}
    elif isinstance(spec, Mapping) and isinstance(spec.get("_target_"), str):
        target, kwargs = spec["_target_"], {k: v for k, v in spec.items() if k != "_target_"}
    else:
        raise UserError(f"hydra.sweeper.{kind}={spec!r} is not valid: give a name ({', '.join(names)}) or a "
                        f"mapping with _target_ and the class's arguments")  # fmt: skip
    name = next((short for short, path in names.items() if path == target), None)
    if name in SAMPLER_NEEDS and importlib.util.find_spec(SAMPLER_NEEDS[name][0]) is None:
        raise UserError(f"hydra.sweeper.{kind}={name} needs {SAMPLER_NEEDS[name][0]}: {SAMPLER_NEEDS[name][1]}")
    try:
        cls = get_class(target)
    except (ImportError, ValueError) as error:
        raise UserError(f"hydra.sweeper.{kind}._target_={target}: no such class ({error})") from None
    try:
        return cls(**kwargs, **extra)
    except TypeError as error:
        raise UserError(f"hydra.sweeper.{kind}: {target.rsplit('.', 1)[-1]}({error})") from None


def build_sampler(spec: Any, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler, seeded with `seed` (None: not seeded)."""
    return build(spec, "sampler", SAMPLERS, **({} if seed is None else {"seed": seed}))


def build_pruner(spec: Any) -> optuna.pruners.BasePruner:
    return build(spec, "pruner", PRUNERS)


def sampler_seed(spec: Any, seed: int | None) -> int | None:
    """`hydra.sweeper.seed`, else a `seed` in the sampler's mapping; popped from the mapping either way (the sweeper
    seeds each trial's sampler itself)."""
    if isinstance(spec, dict) and "seed" in spec:
        own = spec.pop("seed")
        return seed if seed is not None else own
    return seed


# The search space: Hydra's sweep syntax, as the basic sweeper reads it.


@dataclass
class SearchSpace:
    """The overrides every trial gets as they are, and the distribution of each searched key."""

    fixed: list[str] = field(default_factory=list)
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """A trial's overrides: the fixed ones, then `key=value` for each of its parameters."""
        return [*self.fixed, *(f"{key}={override_value(params[key])}" for key in self.distributions)]


def override_value(value: Any) -> str:
    """A sampled value as Hydra reads it back: a string as it is (so "[64,64]" becomes a list), true/false, null."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override: choice(a, b) or a,b -> categorical; range(a, b[, step]) -> the
    same values as Hydra's range (b excluded), integer or stepped float; interval(a, b) -> float, tag(int, ...) ->
    integer, tag(log, ...) -> log scale."""
    key, value = override.get_key_element(), override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        choices = list(override.sweep_iterator())
        bad = [choice for choice in choices if not isinstance(choice, str | int | float | bool)]
        if bad:
            raise UserError(f"{key}: choices must be numbers or strings, not {bad[0]!r}; write a list as a string, "
                            f'e.g. choice("[64,64]", "[128,64]")')  # fmt: skip
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise UserError(f"{key}={override.get_value_element_as_str()} is empty")
        log_scale = "log" in value.tags
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(values[0], values[-1], step=1 if log_scale else value.step, log=log_scale)
        return FloatDistribution(float(values[0]), float(values[-1]), step=None if log_scale else value.step,
                                 log=log_scale)  # fmt: skip
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags:
            return IntDistribution(math.ceil(value.start), math.floor(value.end), log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise UserError(f"{key}={override.get_value_element_as_str()}: not a search space; use choice(...), range(...), "
                    "interval(a, b), tag(log, interval(a, b)) or tag(int, interval(a, b))")  # fmt: skip


def search_space(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> SearchSpace:
    """`hydra.sweeper.params`, then the command line's overrides (which win: a sweep there is searched too, a plain
    value there pins the key)."""
    parser = OverridesParser.create()
    space = SearchSpace()
    typed = [f"{key}={value}" for key, value in (params or {}).items()]
    fixed: dict[str, str] = {}
    for line, override in zip([*typed, *arguments], parser.parse_overrides([*typed, *arguments]), strict=True):
        key = override.get_key_element()
        space.distributions.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space.distributions[key] = distribution(override)
        else:
            fixed[key] = line
    space.fixed = list(fixed.values())
    return space


# Storages.


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The study's storage: `hydra.sweeper.storage`, or a journal file in the sweep dir."""
    return storage or f"{JOURNAL}{Path(sweep_dir) / SWEEP_JOURNAL}"


def with_installed_driver(url: str) -> str:
    """`postgresql://...` with the driver the sweeps extra installs (psycopg 3), which SQLAlchemy 2.1 picks by
    itself but 2.0 does not (it picks psycopg2): `postgresql+psycopg://...` unless psycopg2 is there."""
    find = importlib.util.find_spec
    if url.startswith("postgresql://") and find("psycopg2") is None and find("psycopg") is not None:
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def storage_label(url: str) -> str:
    """The storage as it is safe to print: a database URL's password hidden."""
    if url.startswith(JOURNAL) or "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_storage(
    url: str, heartbeat_interval: int | None = None, grace_period: int | None = None, max_retry: int = 3
) -> BaseStorage:
    """Optuna's storage at `url`. A database gets a heartbeat when `heartbeat_interval` is set: the trials of a worker
    that stopped beating for `grace_period` seconds are failed by the next worker that asks for a trial, and queued
    again (up to `max_retry` times)."""
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len(JOURNAL) :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise UserError(f"hydra.sweeper.storage={url!r} is not a storage. Use {STORAGE_HELP}")
    sqlite = sqlite_path(url)
    if sqlite is not None:
        sqlite.parent.mkdir(parents=True, exist_ok=True)  # sqlite makes the file, not its folder
    # sqlite: several processes wait for the file's lock rather than fail at once; a server: a dropped connection
    # (a long trial, a restarted server) is replaced before use.
    engine = {"connect_args": {"timeout": 60}} if sqlite is not None else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat's arguments
            heartbeat = {}
            if heartbeat_interval:
                heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
                             **retry_stale_trials(max_retry)}  # fmt: skip
            return _rdb_storage(with_installed_driver(url), engine, heartbeat)
    except ImportError as error:
        raise UserError(f"hydra.sweeper.storage={storage_label(url)}: its database driver is not installed "
                        f"({error}). The sweeps extra brings sqlite's and PostgreSQL's: "
                        'pip install -e ".[sweeps]"') from None  # fmt: skip
    except Exception as error:  # SQLAlchemy's: a bad URL, a server that does not answer, a refused login
        if type(error).__module__.split(".")[0] != "sqlalchemy":
            raise
        first = str(error).strip().splitlines()[0]
        raise UserError(f"hydra.sweeper.storage={storage_label(url)}: cannot open it ({first}). Use "
                        f"{STORAGE_HELP}") from None  # fmt: skip


def _rdb_storage(url: str, engine: dict[str, Any], heartbeat: dict[str, Any], tries: int = 5) -> RDBStorage:
    """RDBStorage(url): the first worker of a new database creates Optuna's tables; two that start together both
    try, and the second's attempt fails on a table the first just made. It then finds them made: try again."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(tries):
        try:
            return RDBStorage(url, engine_kwargs=engine, **heartbeat)
        except (IntegrityError, ProgrammingError, OperationalError) as error:
            racing = isinstance(error, IntegrityError) or "already exists" in str(error)
            if not racing or attempt == tries - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def heartbeat_enabled(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.heartbeat_interval is not None


def open_study(storage: BaseStorage, study_name: str | None, direction: str, sampler: Any, pruner: Any) -> optuna.Study:
    """The study `study_name` in `storage`, created if new; refused when it exists with the other direction."""
    direction = {"max": "maximize", "min": "minimize"}.get(str(direction), str(direction))
    if direction not in ("maximize", "minimize"):
        raise UserError(choices_message("hydra.sweeper.direction", direction, ["maximize", "minimize"]))
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction=direction, sampler=sampler, pruner=pruner,
        load_if_exists=True,
    )  # fmt: skip
    if study.direction.name.lower() != direction:
        raise UserError(
            f"the study {study.study_name!r} in this storage {study.direction.name.lower()}s its metric, and this "
            f"search would {direction} it (mode={direction[:3]}): give this search its own hydra.sweeper.study_name"
        )
    return study


# The workers: asking, beating, telling.


class Heartbeat:
    """Records, every `interval` seconds in a thread, that this worker's running trials are alive: a worker that dies
    (SIGKILL, a lost machine) stops beating, and after the storage's grace period the next worker to ask fails them
    and runs them again (the storage's retry callback queues a copy)."""

    def __init__(self, storage: RDBStorage) -> None:
        self.storage = storage
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def beat(self) -> None:
        with self.lock:
            running = list(self.trial_ids)
        for trial_id in running:
            self.storage.record_heartbeat(trial_id)

    def run(self) -> None:
        while not self.stop.wait(self.storage.heartbeat_interval):
            try:
                self.beat()
            except Exception as error:  # a database that is briefly away: the next beat tries again
                log.warning("Optuna heartbeat not recorded: %s", error)

    @contextmanager
    def running(self, study: optuna.Study, trials: Sequence[optuna.Trial]) -> Iterator[None]:
        """Beat for `trials` while the block runs them."""
        study_id = self.storage.get_study_id_from_name(study.study_name)
        ids = {self.storage.get_trial_id_from_study_id_trial_number(study_id, trial.number) for trial in trials}
        with self.lock:
            self.trial_ids |= ids
        self.beat()
        if self.thread is None:
            self.thread = threading.Thread(target=self.run, daemon=True, name="hydralight-optuna-heartbeat")
            self.thread.start()
        try:
            yield
        finally:
            with self.lock:
                self.trial_ids -= ids


def ask(study: optuna.Study, space: SearchSpace, sampler_spec: Any = None, seed: int | None = None) -> optuna.Trial:
    """The next trial: a queued one (a retry of a dead worker's trial) first, else a new sample. With a seed, the
    sampler is seeded with seed + the trials the study holds so far: one process repeats its search exactly, and a
    study that continues samples anew."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # fail_stale_trials is "experimental"
        optuna.storages.fail_stale_trials(study)  # a dead worker's trials: failed, and queued again
    if seed is not None:
        study.sampler = build_sampler(sampler_spec, seed + len(study.get_trials(deepcopy=False)))
    with warnings.catch_warnings():  # the heartbeat is ours (Heartbeat), not Study.optimize's
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        return study.ask(space.distributions)


def tell(study: optuna.Study, trial: optuna.Trial, job: JobReturn) -> tuple[FrozenTrial, bool]:
    """Tell the study how the trial's job ended: its value; pruned (its job stopped early by the pruner's word: it
    finished, tested and saved like any other); or failed, with the error. Returns the finished trial, and whether
    the sampler has nothing left to sample (a grid sampler's last point: it calls Study.stop)."""
    job_dir = job_output_dir(job)
    if job_dir is not None:
        trial.set_user_attr(JOB_DIR, str(job_dir))
    told: dict[str, Any]
    if job.status != JobStatus.COMPLETED:
        error = job_return_value(job)
        trial.set_user_attr(ERROR, f"{type(error).__name__}: {error}"[:1000])
        told = {"state": TrialState.FAIL}
    elif PRUNED_EPOCH in stored(study, trial).user_attrs:  # set by the job (trial.user_attrs is this process's copy)
        told = {"state": TrialState.PRUNED}
    elif (value := finite_number(job.return_value)) is None:
        trial.set_user_attr(ERROR, f"the job returned {job.return_value!r}, not a number: is optimized_metric logged?")
        told = {"state": TrialState.FAIL}
    else:
        told = {"values": value}
    try:
        return study.tell(trial, **told), False
    except RuntimeError as error:  # the state is stored before the sampler's after_trial raises this
        if "Study.stop" not in str(error):
            raise
        return stored(study, trial), True


def stored(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """The trial as the storage holds it now, with what its job (another process, maybe) wrote into it."""
    return next(frozen for frozen in study.get_trials(deepcopy=False) if frozen.number == trial.number)


def stopped(study: optuna.Study, trials: Sequence[optuna.Trial], why: str) -> None:
    """The sweep was stopped (a signal, Ctrl-C) while `trials` ran: each is failed and queued again with the same
    parameters, so that the next worker, or the same command run again on this storage, runs it."""
    for trial in trials:
        try:
            trial.set_user_attr(STOPPED, why)
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        except Exception as error:  # stopping: never hide the reason the sweep stops
            log.warning("Optuna trial %d left as it was: %s", trial.number, error)


def job_output_dir(job: JobReturn) -> Path | None:
    hydra_cfg = job.hydra_cfg
    return Path(hydra_cfg.hydra.runtime.output_dir) if hydra_cfg is not None else None


def record_trial(job: JobReturn, trial: FrozenTrial) -> None:
    """Add the trial to its job's record (job.json, what the sweep summary reads): its number in the study, its
    state and parameters, and for a pruned trial the status `pruned` and the epoch it stopped at."""
    job_dir = job_output_dir(job)
    path = job_dir / JOB_RECORD if job_dir is not None else None
    if path is None or not path.is_file():
        return  # no sweep summary configured
    record = json.loads(path.read_text())
    record.update(trial=trial.number, state=trial.state.name, params=trial.params)
    if trial.state == TrialState.PRUNED:
        record.update(status="pruned", pruned_epoch=trial.user_attrs.get(PRUNED_EPOCH))
    files.write_text(path, json.dumps(record, indent=2) + "\n")


def report(
    study: optuna.Study, here: Sequence[FrozenTrial], storage: str, sweep_dir: str | Path, metric: str | None
) -> str:
    """What this sweep did to the study, and its best trial; also written to <sweep dir>/optimization_results.yaml,
    with the study's plots beside it (sweeps/optuna_plots.py)."""
    states = [trial.state for trial in here]
    counts = ", ".join(f"{states.count(state)} {name}" for state, name in (
        (TrialState.COMPLETE, "complete"), (TrialState.PRUNED, "pruned"), (TrialState.FAIL, "failed")))  # fmt: skip
    total = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
    lines = [f"Optuna study {study.study_name!r} ({storage}): {len(here)} trials in this sweep ({counts}), "
             f"{total} finished in the study"]  # fmt: skip
    results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "storage": storage,
                               "direction": study.direction.name.lower(), "metric": metric,
                               "trials": {"this_sweep": len(here), "in_study": total}}  # fmt: skip
    try:
        best = study.best_trial
    except ValueError:  # no complete trial yet
        lines.append("Best trial: none completed yet")
    else:
        params = " ".join(f"{key}={override_value(value)}" for key, value in best.params.items())
        lines.append(f"Best trial: {best.number}, {metric or 'value'}={best.value:.6g}: {params}")
        job_dir = best.user_attrs.get(JOB_DIR)
        if job_dir:
            lines.append(f"  its run dir: {job_dir}")
        results.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                       best_job_dir=job_dir)  # fmt: skip
    path = Path(sweep_dir) / RESULTS
    files.write_text(path, yaml.safe_dump(results, sort_keys=False))
    lines.append(f"Written: {path}")
    lines.extend(plot_study(study, sweep_dir, metric))
    return "\n".join(lines)


# A job's side.


def job_trial(hydra_cfg: Any) -> optuna.Trial | None:
    """The trial this job runs (the sweeper names it in `hydra.sweeper.trial`), on its study's storage, with the
    search's pruner; None outside an Optuna search (a single run, the ranks > 0 of a DDP job)."""
    sweeper = hydra_cfg.get("sweeper") or {}
    number = sweeper.get("trial")
    if number is None:
        return None
    storage = open_storage(storage_url(sweeper.get("storage"), hydra_cfg.sweep.dir))
    name = sweeper.get("study_name")
    # The sampler is the sweeper's business: a plain one here, which a Trial's construction cannot move.
    study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(),
                              pruner=build_pruner(sweeper.get("pruner")))  # fmt: skip
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), int(number))
    return optuna.trial.Trial(study, trial_id)
