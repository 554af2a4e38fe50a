"""A sweep run one job after the other against the same sweep run 2 jobs at a time, on this machine.

    python benchmarks/parallel_sweep.py [--seeds 1,2,3,4] [--n-jobs 2] [-- extra overrides]

Three runs of `python train.py -m seed=<seeds>` in a scratch dir, each its own process: the basic launcher
(sequential), joblib with n_jobs jobs at once (each with its share of the cores as torch threads: MachineShare), and
joblib without it (`~hydra.callbacks.machine_share`: joblib's loky workers then limit each job's threads
themselves, to cores // n_jobs, but give no job GPUs of its own). It
prints the wall time of each, their ratios to the sequential run, and how far each job's metrics are from the
sequential run's (the largest relative difference over the jobs' best validation and test metrics).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(cwd: Path, seeds: str, *overrides: str) -> tuple[float, dict[str, dict[str, float]]]:
    """Wall seconds of the sweep, and each job's metrics by its seed."""
    start = time.monotonic()
    command = [sys.executable, str(ROOT / "train.py"), "-m", f"seed={seeds}", *overrides]
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - start
    (summary,) = sorted(cwd.glob("outputs/train/multiruns/*/summary.json"))[-1:]
    jobs = json.loads(summary.read_text())["jobs"]
    by_seed = {dict(o.split("=", 1) for o in job["overrides"])["seed"]: job["metrics"] for job in jobs}
    return wall, by_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3,4")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="extra overrides for every job (after --)")
    args = parser.parse_args()
    joblib = ("hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}")
    variants = {
        "sequential (basic launcher)": (),
        f"joblib n_jobs={args.n_jobs}, MachineShare": joblib,
        f"joblib n_jobs={args.n_jobs}, without MachineShare": (*joblib, "~hydra.callbacks.machine_share"),
    }
    results = {}
    for name, overrides in variants.items():
        with tempfile.TemporaryDirectory() as scratch:
            results[name] = sweep(Path(scratch), args.seeds, *overrides, *args.overrides)
        print(f"{name}: {results[name][0]:.1f} s", file=sys.stderr, flush=True)
    base_wall, base_metrics = next(iter(results.values()))
    print("| sweep | wall s | / sequential | largest relative difference of a job's metric from sequential |")
    print("|---|---|---|---|")
    for name, (wall, metrics) in results.items():
        differences = [
            abs(metrics[seed][key] - value) / max(abs(value), 1e-12)
            for seed, values in base_metrics.items() for key, value in values.items()
            if key.startswith(("val/acc_best", "test/"))
        ]  # fmt: skip
        print(f"| {name} | {wall:.1f} | {wall / base_wall:.2f} | {max(differences):.1e} |")


if __name__ == "__main__":
    main()
