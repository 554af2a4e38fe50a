"""What pruning saves, and what a second worker on one study adds, on the digits search
(conf/hparams_search/digits_optuna.yaml), on this machine.

    python benchmarks/optuna_sweep.py [--trials 24] [--shared-trials 24] [--shared-epochs 10] [--only pruning|sharing]
                                      [--quick] [-- overrides]

1. Pruning: `python train.py hparams_search=digits_optuna hydra.sweeper.n_trials=<trials> hydra.sweeper.seed=0`,
   with the search's median pruner and with `hydra.sweeper.pruner=none`: trials complete and pruned, the epochs the
   trials ran in all (each validation a trial reported), the wall time, and the best val/acc_best reached.
2. Sharing: <shared-trials> trials of the same search (no pruner, <shared-epochs> epochs each) run by one process,
   then by two processes at once on one PostgreSQL study (each running half; hydralight.testing.postgres starts a
   throwaway server), each process with its share of the cores as torch threads: trials per minute.
Each command runs as a user types it, in a scratch dir; the tables are printed as markdown. Needs the sweeps extra,
and PostgreSQL's binaries for the second table (apt-get install -y postgresql; it is skipped without them).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEARCH = "hparams_search=digits_optuna"
QUIET = ("logger=none", "~callbacks.progress_bar", "trainer.enable_progress_bar=false")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def start(cwd: Path, overrides: list[str], threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, str(ROOT / "train.py"), SEARCH, *QUIET, *overrides]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait(process: subprocess.Popen) -> None:
    _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a search failed (exit {process.returncode}):\n{err[-3000:]}")


def study_of(storage: str, name: str = "digits_optuna"):
    import optuna

    from hydralight.core.sweeps.optuna import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def pruning(trials: int, overrides: list[str]) -> None:
    from optuna.trial import TrialState

    rows = []
    for name, pruner in (("median pruner (the search's)", []), ("no pruner", ["hydra.sweeper.pruner=none"])):
        with tempfile.TemporaryDirectory() as scratch:
            sweep_dir = Path(scratch) / "sweep"
            began = time.monotonic()
            wait(start(Path(scratch), [f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.seed=0",
                                       f"hydra.sweep.dir={sweep_dir}", *pruner, *overrides], cores()))  # fmt: skip
            wall = time.monotonic() - began
            study = study_of(f"journal:{sweep_dir / 'optuna.journal'}")
            states = [trial.state for trial in study.trials]
            epochs = sum(len(trial.intermediate_values) for trial in study.trials)
            rows.append((name, states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED), epochs, wall,
                         study.best_value))  # fmt: skip
        print(f"{name}: {wall:.0f} s", file=sys.stderr, flush=True)
    print(f"\n{trials} trials of hparams_search=digits_optuna (seed 0), {cores()} cores\n")
    print("| search | trials complete | pruned | epochs run | wall s | best val/acc_best |")
    print("|---|---|---|---|---|---|")
    for name, complete, pruned, epochs, wall, best in rows:
        print(f"| {name} | {complete} | {pruned} | {epochs} | {wall:.0f} | {best:.4f} |")


def sharing(trials: int, epochs: int, overrides: list[str]) -> None:
    from hydralight.testing.postgres import NoServer, throwaway_server

    fixed = ["hydra.sweeper.pruner=none", f"trainer.max_epochs={epochs}", *overrides]
    rows = []
    try:
        with throwaway_server() as new_database:
            for workers in (1, 2):
                storage = new_database()
                with tempfile.TemporaryDirectory() as scratch:
                    began = time.monotonic()
                    processes = [
                        start(Path(scratch), [f"hydra.sweeper.n_trials={trials // workers}",
                                              f"hydra.sweeper.storage={storage}",
                                              f"hydra.sweep.dir={Path(scratch) / str(worker)}", *fixed],
                              max(1, cores() // workers))
                        for worker in range(workers)
                    ]  # fmt: skip
                    for process in processes:
                        wait(process)
                    wall = time.monotonic() - began
                ran = len(study_of(storage).trials)
                rows.append((workers, ran, wall))
                print(f"{workers} worker(s): {ran} trials in {wall:.0f} s", file=sys.stderr, flush=True)
    except NoServer as why:
        print(f"\nSharing skipped: {why}")
        return
    print(f"\n{trials} trials of {epochs} epochs (no pruner) on one PostgreSQL study, {cores()} cores\n")
    print("| workers | torch threads each | trials | wall s | trials per minute |")
    print("|---|---|---|---|---|")
    for workers, ran, wall in rows:
        print(f"| {workers} | {max(1, cores() // workers)} | {ran} | {wall:.0f} | {60 * ran / wall:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--shared-trials", type=int, default=24)
    parser.add_argument("--shared-epochs", type=int, default=10)
    parser.add_argument("--only", choices=("pruning", "sharing"), help="one of the two tables")
    parser.add_argument("--quick", action="store_true", help="4 trials of 3 epochs each, a check that it runs")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every search (after --)")
    args = parser.parse_args()
    overrides = list(args.overrides)
    if args.quick:
        args.trials, args.shared_trials, args.shared_epochs = 4, 4, 2
        overrides.append("trainer.max_epochs=3")
    if args.only in (None, "pruning"):
        pruning(args.trials, overrides)
    if args.only in (None, "sharing"):
        sharing(args.shared_trials, args.shared_epochs, overrides)


if __name__ == "__main__":
    main()
