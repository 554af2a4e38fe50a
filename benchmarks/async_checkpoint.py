"""What async_checkpoint=true gains: epoch time with step checkpoints written synchronously and by a background thread.

    python benchmarks/async_checkpoint.py [--quick] [--repeats N] [--every N] [--threads N] [--disk-mb-s R]
                                          [--json F] [-- overrides]

Each run is the default `python train.py` (digits) with a wide MLP (3 hidden layers of 2048, 8.5 M parameters: a
checkpoint with Adam's state is ~98 MB), 4 epochs of 20 steps, and `last.ckpt` rewritten every `--every` optimizer
steps (`callbacks.last_checkpoint.every_n_train_steps`), three ways:

  none    no step checkpoints: only the end-of-epoch ones every run writes. The floor.
  sync    step checkpoints written by the training thread (the default).
  async   step checkpoints written by a background thread (`async_checkpoint=true`).

Reported, as in bench.py: steady-state seconds per epoch (from bench_parts.EpochTimer: median of epochs 2..N, each
with its validation and its checkpoints), the median over `--repeats` runs whose order rotates, the cost of the step
checkpoints against `none`, the ratio async/sync, and the checkpoint's size. `--disk-mb-s R` simulates a disk (or
network filesystem) that writes R MB/s: each checkpoint write also waits its size / R, in a blocking call that
releases the GIL as a real write does (`slow_disk`, imported by the training processes from this file). `--quick`: a
narrow MLP and a few steps (checks that it runs; times nothing).
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import bench  # this folder's bench.py: the same runs, timer and medians

MODEL = ("model.net.hidden_sizes=[2048,2048,2048]", "trainer.limit_train_batches=20", "trainer.max_epochs=4")
QUICK = ("model.net.hidden_sizes=[64]", "trainer.limit_train_batches=6", "trainer.max_epochs=2")
COMMON = (
    "trainer.accelerator=cpu",
    "test=false",
    "logger=none",
    "~callbacks.progress_bar",
    "trainer.enable_progress_bar=false",
)
VARIANTS = ("none", "sync", "async")


def slow_disk(mb_per_s: float) -> Any:
    """For the training processes (a callback `_target_`): from now on every local file write of this process also
    takes len(data) / mb_per_s seconds (a sleep, which releases the GIL as a blocking write does), as on a disk or
    network filesystem that slow below the page cache. Returns a callback that does nothing else."""
    import time

    from fsspec.implementations.local import LocalFileOpener
    from lightning.pytorch import Callback

    write = LocalFileOpener.write

    def slow_write(opener: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        written = write(opener, data, *args, **kwargs)
        time.sleep(len(data) / (mb_per_s * 2**20))
        return written

    LocalFileOpener.write = slow_write
    return Callback()


def variant_overrides(variant: str, every: int) -> list[str]:
    step_checkpoints = [f"callbacks.last_checkpoint.every_n_train_steps={every}"]
    return {
        "none": ["async_checkpoint=false"],
        "sync": [*step_checkpoints, "async_checkpoint=false"],
        "async": [*step_checkpoints, "async_checkpoint=true"],
    }[variant]


def disk(args: argparse.Namespace) -> list[str]:
    if args.disk_mb_s is None:
        return []
    return [
        "+callbacks.slow_disk._target_=async_checkpoint.slow_disk",
        f"+callbacks.slow_disk.mb_per_s={args.disk_mb_s}",
    ]


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every variant `repeats` times, the order rotating from one repeat to the next."""
    sizes = QUICK if args.quick else MODEL
    runs: dict[str, list] = {variant: [] for variant in VARIANTS}
    checkpoint_mb = None
    for repeat in range(args.repeats):
        for variant in VARIANTS[repeat % 3 :] + VARIANTS[: repeat % 3]:
            tag = f"{variant}-{repeat}"
            overrides = [*COMMON, *sizes, *variant_overrides(variant, args.every), *disk(args), *args.overrides]
            result = bench.run_once("hydralight", overrides, workdir, tag, args.threads)
            runs[variant].append(result)
            checkpoint_mb = (workdir / tag / "checkpoints" / "last.ckpt").stat().st_size / 2**20
            bench.log(f"  {tag}: {result['s_per_epoch']:.3f} s/epoch, wall {result['wall_s']:.1f} s")
    results = {variant: bench.median_of(variant_runs) for variant, variant_runs in runs.items()}
    none, sync, background = (results[variant]["s_per_epoch"] for variant in VARIANTS)
    steps = int(next(arg for arg in sizes if arg.startswith("trainer.limit_train_batches=")).split("=")[1])
    return {
        "variants": results,
        "async/sync": background / sync,
        "sync/none": sync / none,
        "async/none": background / none,
        "step_checkpoint_s_per_epoch": {"sync": sync - none, "async": background - none},
        "saves_per_epoch": (steps - 1) // args.every,  # a step save on an epoch's last batch is the epoch-end one
        "steps_per_epoch": steps,
        "checkpoint_mb": checkpoint_mb,
    }


def format_report(report: dict[str, Any]) -> str:
    r = report["results"]
    lines = [
        "| checkpoints | s/epoch (median) | min-max | vs none | step checkpoints' cost, s/epoch |",
        "|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        v = r["variants"][variant]
        cost = r["step_checkpoint_s_per_epoch"].get(variant)
        lines.append(
            f"| {variant} | {v['s_per_epoch']:.3f} | {v['s_per_epoch_min']:.3f}-{v['s_per_epoch_max']:.3f}"
            f" | {v['s_per_epoch'] / r['variants']['none']['s_per_epoch']:.2f}x"
            f" | {'-' if cost is None else f'{cost:.3f}'} |"
        )
    rate = report["settings"]["disk_mb_s"]
    disk = "as is" if rate is None else f"{rate:g} MB/s simulated"
    lines.append(
        f"\nasync/sync: {r['async/sync']:.2f} ({r['saves_per_epoch']} step checkpoints of {r['checkpoint_mb']:.1f} MB "
        f"per epoch of {r['steps_per_epoch']} steps; {report['settings']['repeats']} runs each, torch threads: "
        f"{r['variants']['sync']['runs'][0]['threads']}; disk: {disk})"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a narrow MLP, 1 repeat (CI: checks it runs, not speed)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per variant (default 3; quick: 1)")
    parser.add_argument("--every", type=int, default=None, help="a step checkpoint every N steps (default 5; quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's choice)")
    parser.add_argument("--disk-mb-s", type=float, default=None, help="simulate a disk writing this many MB/s")
    parser.add_argument("--json", default=None, help="write every number (and each run) to this JSON file")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. data.batch_size=128")
    args = parser.parse_args(argv)
    args.repeats = (1 if args.quick else 3) if args.repeats is None else args.repeats
    args.every = (2 if args.quick else 5) if args.every is None else args.every
    if args.repeats < 1 or args.every < 1:
        parser.error(f"--repeats and --every must be >= 1 (got {args.repeats} and {args.every})")
    if args.disk_mb_s is not None and args.disk_mb_s <= 0:
        parser.error(f"--disk-mb-s must be > 0 (got {args.disk_mb_s})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {
        "machine_before": bench.machine(),
        "settings": {
            "quick": args.quick,
            "repeats": args.repeats,
            "every_n_train_steps": args.every,
            "threads": args.threads,
            "disk_mb_s": args.disk_mb_s,
            "overrides": [*COMMON, *(QUICK if args.quick else MODEL), *args.overrides],
        },
    }
    with tempfile.TemporaryDirectory(prefix="hydralight-async-ckpt-") as tmp:
        bench.log(f"training: {', '.join(VARIANTS)} x {args.repeats}, a step checkpoint every {args.every} steps")
        report["results"] = measure(args, Path(tmp))
    report["machine_after"] = bench.machine()

    print(format_report(report))
    load_before, load_after = report["machine_before"]["loadavg_1_5_15"], report["machine_after"]["loadavg_1_5_15"]
    print(f"load average (1/5/15 min) before: {load_before}, after: {load_after}; {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if not bench.finite(report):
        bench.log("some measurement is not finite")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
