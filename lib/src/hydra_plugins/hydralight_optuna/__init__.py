"""hydralight's Optuna sweeper: `hydra/sweeper=optuna` (what `hparams_search=<name>` configs choose), a Hydra Sweeper
over Optuna's ask-and-tell API (optuna >= 4.5), with pruning and one study shared by many processes and machines.

Each trial is one Hydra job: the sweeper asks the study for a trial, launches the job with the trial's point of the
search space as overrides (any launcher: basic, joblib, submitit) plus `hydra.sweeper.trial=<number>`, which the
job's pruning callback (hydralight.core.sweeps.pruning) reports to; then tells the study the job's return value,
or that the trial was pruned or failed. At the end it reports the study, with PNGs of each trial's metric and each
parameter's importance when matplotlib is installed (hydralight.core.sweeps.optuna_plots). Hydra imports every plugin
on every start: this module imports no Optuna and no matplotlib (hydralight.core.sweeps.optuna holds what does,
imported when a search starts).
"""

import importlib.util
import logging
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    """`hydra.sweeper.*` (docs/sweeps.md, "Optuna"); an hparams_search config sets these."""

    _target_: str = "hydra_plugins.hydralight_optuna.OptunaSweeper"
    _recursive_: bool = False  # the sampler and pruner reach the sweeper as settings: it builds them itself
    direction: str = "minimize"  # maximize | minimize (hparams_search configs: ${mode}imize)
    study_name: str | None = None  # fixed, so that a storage's study is continued and shared; null: a new name
    storage: str | None = None  # sqlite:///<file>.db | postgresql://... | journal:<file>; null: the sweep dir's
    n_trials: int = 20  # trials this process runs (several processes on one storage: each runs its own n_trials)
    n_jobs: int = 1  # trials launched together (in parallel with hydra/launcher=joblib): a batch waits for its last
    max_failure_rate: float = 0.0  # stop asking for trials once more than this fraction of this sweep's failed
    sampler: Any = "tpe"  # tpe | random | cmaes | gp | qmc, or {_target_: <sampler class>, <its arguments>}
    seed: int | None = None  # the sampler's seed (+ the study's trial count at each ask); null: not seeded
    pruner: Any = "none"  # median | successive_halving | hyperband | none, or {_target_: <pruner class>, ...}
    params: dict[str, Any] | None = None  # the search space: key: choice(...) | range(...) | interval(a, b) | ...
    heartbeat_interval: int | None = 60  # database storages: seconds between a worker's beats; null: no heartbeat
    grace_period: int | None = None  # seconds without a beat before a trial is failed and retried (null: 2 beats)
    max_retry: int = 3  # how many times a trial whose worker died is run again
    trial: int | None = None  # set by the sweeper for each job: the trial it is (read by its pruning callback)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="hydralight")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


class OptunaSweeper(Sweeper):
    """Asks an Optuna study for trials, `n_jobs` at a time, and runs each as a Hydra job until `n_trials` ran."""

    def __init__(self, **settings: Any) -> None:
        self.settings = {key: _plain(value) for key, value in settings.items()}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[Any]:
        from hydralight.core.errors import UserError

        try:
            if importlib.util.find_spec("optuna") is None:
                raise UserError(
                    "hparams_search= runs an Optuna search, which needs the sweeps extra: pip install -e '.[sweeps]' "
                    "(or hydralight[sweeps])."
                )
            return self._sweep(list(arguments))
        except UserError as error:  # a setting of the search: one line, as for any user error
            print(f"{error.prefix}: {error}", file=sys.stderr, flush=True)
            sys.exit(error.exit_code)

    def _sweep(self, arguments: list[str]) -> list[Any]:
        from optuna.trial import TrialState

        from hydralight.core.errors import UserError
        from hydralight.core.sweeps import optuna as search

        assert self.config is not None and self.launcher is not None
        settings = self.settings
        sweep_dir = Path(self.config.hydra.sweep.dir)
        space = search.search_space(settings["params"], arguments)
        if not space.distributions:
            raise UserError("hydra.sweeper.params names nothing to search: give keys with choice(...), range(...) or "
                            "interval(a, b), in the hparams_search config or on the command line")  # fmt: skip
        sampler_spec = settings["sampler"]
        seed = search.sampler_seed(sampler_spec, settings["seed"])
        url = search.storage_url(settings["storage"], sweep_dir)
        storage = search.open_storage(url, settings["heartbeat_interval"], settings["grace_period"],
                                      settings["max_retry"])  # fmt: skip
        sampler, pruner = search.build_sampler(sampler_spec, seed), search.build_pruner(settings["pruner"])
        study = search.open_study(storage, settings["study_name"], settings["direction"], sampler, pruner)
        # What each job needs to find its trial: its number, and the study's name when Optuna made one up.
        named = [] if settings["study_name"] else [f"hydra.sweeper.study_name={study.study_name}"]
        heartbeat = search.Heartbeat(storage) if search.heartbeat_enabled(storage) else None
        label = search.storage_label(url)
        n_trials, n_jobs = int(settings["n_trials"]), max(1, int(settings["n_jobs"]))
        log.info("Optuna study %r (%s), %s: %d trials, %d at a time; sampler %s, pruner %s", study.study_name, label,
                 study.direction.name.lower(), n_trials, n_jobs, type(study.sampler).__name__,
                 type(study.pruner).__name__)  # fmt: skip
        done: list[Any] = []
        returns: list[Any] = []
        exhausted = False  # a grid sampler's last point was told
        while len(done) < n_trials and not exhausted:
            trials = [search.ask(study, space, sampler_spec, seed) for _ in range(min(n_jobs, n_trials - len(done)))]
            batch = [[*space.overrides(trial.params), f"hydra.sweeper.trial={trial.number}", *named]
                     for trial in trials]  # fmt: skip
            try:
                self.validate_batch_is_legal(batch)
                with heartbeat.running(study, trials) if heartbeat is not None else nullcontext():
                    jobs = self.launcher.launch(batch, initial_job_idx=len(done))
            except (KeyboardInterrupt, SystemExit) as stop:  # a preemption, Ctrl-C: the sweep ends here
                search.stopped(study, trials, why=type(stop).__name__)
                raise
            except Exception:
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            for trial, job in zip(trials, jobs, strict=True):
                frozen, last = search.tell(study, trial, job)
                search.record_trial(job, frozen)
                done.append(frozen)
                exhausted = exhausted or last
            returns.extend(jobs)
            failed = sum(trial.state == TrialState.FAIL for trial in done)
            if failed / len(done) > float(settings["max_failure_rate"]):
                log.error("%d of %d trials failed, more than hydra.sweeper.max_failure_rate=%s: no more trials",
                          failed, len(done), settings["max_failure_rate"])  # fmt: skip
                break
        if exhausted and len(done) < n_trials:
            log.info("The sampler has tried every point of its search space: %d trials, not %d", len(done), n_trials)
        print(search.report(study, done, label, sweep_dir, self.config.get("optimized_metric")), flush=True)
        return returns
