"""Does the on-disk data path hold memory flat as the data grows, and what does it cost against data in memory?
python benchmarks/ondisk.py [--quick] [--repeats N] [--keep] [--json out.json]

Every measured run is its own `python train.py` process (imports, memory and caches never leak between runs).

Datasets. `RepeatedDigits` (below), a source with the interface of hydralight/data/sources.py, yields the embedded
digits upscaled to 1x32x32 (nearest neighbour: 1 KiB a row), as uint8 pixel counts 0..16 with random jitter of
+-1 per pixel, drawn afresh for every copy (seeded), each split repeated `copies` times. `1x` is 27 copies (~50 MB on
disk), `20x` 540 (~1 GB). A worker process writes them through `hydralight.core.prepare.prepare`, the code behind
`python prepare.py` (source=ondisk.RepeatedDigits), and reports each write's seconds, rows and bytes on disk. They
go to a temporary dir (deleted at the end unless --keep; --workdir reuses datasets written there before).

Memory. `train.py experiment=ondisk_images data.path=<dataset>` with 2 loader workers, the same number of steps at
1x and 20x (300; validation every 100 steps and the test pass limited to 5 batches each, no logger), so the run's
length does not grow with the data. Every ~50 ms the benchmark reads /proc/<pid>/status of the run and of all its
descendants (the loader workers) and keeps the peak of each figure (each on its own):
  main VmRSS      the training process's resident set; main RssAnon, its anonymous part
  tree VmRSS      the sum over the process tree (what `ps` adds up: a page shared by N processes counts N times)
  tree RssAnon    of that sum, anonymous memory: what the processes hold themselves. Forked workers share the main
                  process's pages copy-on-write, and this sum counts each shared page once per process
  tree RssFile    of that sum, pages of mapped files (the Arrow files, the libraries): page cache mapped into the
                  processes, which the kernel can drop and read again, not memory the run allocated
  tree PSS        the proportional set size over the tree (smaps_rollup): each shared page divided among its
                  sharers, so every page counts once; tree PSS anon, its anonymous part: the memory the run really
                  holds. Read about every second (smaps_rollup walks the page tables: ~25 ms a 500 MB process here)
Then the same with `data.keep_in_memory=true` (the whole dataset read into RAM; not in --quick), for contrast: that
grows by about the dataset's size. Printed: the peaks, the ratios 20x/1x, and whether each on-disk ratio is under 1.10,
the anonymous figures (what the run holds) apart from those that include mapped file pages.

Throughput. The embedded 8x8 digits, in memory (`python train.py`, data=digits) against the same digits prepared on
disk (`python prepare.py`, then experiment=ondisk_images) with data.num_workers=0, 1, 2; 10 epochs, the median over
`--repeats` runs (order rotated from one repeat to the next). The figure is training samples per second from the
steady-state seconds per epoch, as bench.py measures it (median over epochs 2..N, from one epoch start to the next):
it holds every wait on the loader, the one for each epoch's first batch included, and the epoch's validation pass,
which goes through the same loader. The Throughput callback's `train/samples_per_s` (metrics.json) is shown beside
it: it times only the training batches of the last epoch, from the first batch in hand to the last, so it leaves out
the wait for each epoch's first batch, which is where a loader with workers pays most on a short epoch.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import child_env, durations, finite, log, machine, steady

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
MB = 1e6

COPIES = {"1x": 27, "20x": 540}  # ~50 MB and ~1 GB on disk
QUICK_COPIES = {"1x": 1, "4x": 4}
RSS_STEPS, QUICK_RSS_STEPS = 300, 20
EPOCHS, QUICK_EPOCHS = 10, 3
WORKERS, QUICK_WORKERS = (0, 1, 2), (2,)  # quick: the loader path with workers, once
# The memory runs: memory-mapped, and read whole into RAM for contrast (quick: memory-mapped only).
MODES = {"on-disk": [], "in-memory": ["data.keep_in_memory=true"]}
QUICK_MODES = ("on-disk",)
SAMPLE_S = 0.05
# Reading smaps_rollup walks a process's page tables (~25 ms for a 500 MB process here): in the memory runs (not the
# timed ones) PSS is read at most every PSS_MIN_S, and less often where that would take more than PSS_SHARE of a core.
PSS_MIN_S, PSS_SHARE = 0.25, 0.25
UNDER = 1.10
ROW_BYTES = 32 * 32 + 8  # an image and its int64 label, what the disk-space check counts

# What is read from /proc, per process: status (kB) and smaps_rollup (kB) fields, as the report names them.
STATUS_FIELDS = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem"}
ROLLUP_FIELDS = {"Pss": "pss", "Pss_Anon": "pss_anon", "Pss_File": "pss_file"}
RSS_KEYS = ("main_rss", "main_anon", "tree_rss", "tree_anon", "tree_file", "tree_pss", "tree_pss_anon")
ANON_KEYS = ("main_anon", "tree_anon", "tree_pss_anon")  # what the run holds: the memory-flat test
RSS_NAMES = {
    "main_rss": "main VmRSS", "main_anon": "main RssAnon", "tree_rss": "tree VmRSS", "tree_anon": "tree RssAnon",
    "tree_file": "tree RssFile", "tree_pss": "tree PSS", "tree_pss_anon": "tree PSS anon",
}  # fmt: skip
THROUGHPUT_KEYS = ("s_per_epoch", "samples_per_s", "callback_samples_per_s", "peak_main_rss_mb", "wall_s")


# ---------------------------------------------------------------- the source (runs in the write worker)


class RepeatedDigits:
    """The embedded digits upscaled by `scale` (nearest neighbour), each split repeated `copies` times, every copy
    with its own seeded jitter of +-`jitter` on each pixel count (clipped to 0..16): a dataset of any size whose
    rows are distinct, learnable digits. Split as data=digits splits them (my_project.data.digits.source)."""

    def __init__(
        self,
        copies: int,
        scale: int = 4,
        jitter: int = 1,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
    ) -> None:
        from my_project.data.digits import source as digits

        self.digits = digits(val_fraction, test_fraction, split_seed)
        self.copies, self.scale, self.jitter, self.seed = copies, scale, jitter, seed
        _, height, width = self.digits.arrays["image"].shape[1:]
        self.shape = [1, height * scale, width * scale]

    @property
    def columns(self) -> dict[str, tuple[list[int], str]]:
        return {"image": (self.shape, "uint8"), "label": ([], "int64")}

    def rows(self, split: str) -> Iterator[dict[str, Any]]:
        import numpy as np

        from my_project.data.digits import PIXEL_MAX

        indices = self.digits.splits[split]
        images = self.digits.arrays["image"][indices].repeat(self.scale, axis=2).repeat(self.scale, axis=3)
        labels = self.digits.arrays["label"][indices]
        for copy in range(self.copies):
            rng = np.random.default_rng([self.seed, ("train", "val", "test").index(split), copy])
            noise = rng.integers(-self.jitter, self.jitter + 1, images.shape, dtype=np.int16)
            noisy = np.clip(images + noise, 0, int(PIXEL_MAX)).astype(np.uint8)
            for image, label in zip(noisy, labels, strict=True):
                yield {"image": image, "label": label}

    def description(self) -> dict[str, Any]:
        return {**self.digits.description(), "input_shape": self.shape, "copies": self.copies}


def write_worker(specs: dict[str, list[str]], out: Path) -> None:
    """Each dataset of `specs` (name -> prepare.py overrides) written by prepare(), the code of `python prepare.py`;
    its seconds (the write alone, no imports), rows and bytes on disk to `out`."""
    from hydralight.core.prepare import prepare
    from hydralight.testing import compose_config

    records = {}
    for name, overrides in specs.items():
        cfg = compose_config("prepare", out.parent / f"prepare-{name}", overrides, root_dir=ROOT, conf=ROOT / "conf")
        start = time.perf_counter()
        description = prepare(cfg)
        seconds = time.perf_counter() - start
        records[name] = {
            "write_s": seconds,
            "rows": description["rows"],
            "bytes": sum(file.stat().st_size for file in Path(cfg.out).rglob("*") if file.is_file()),
            "source": description["source"],
        }
        records[name]["rows_per_s"] = sum(description["rows"].values()) / seconds
    out.write_text(json.dumps(records))


# ---------------------------------------------------------------- measuring a process tree


def proc_fields(path: str, fields: dict[str, str]) -> dict[str, float]:
    """The `fields` (kB) of a /proc file in MB; {} if the process has gone."""
    values = {}
    try:
        with open(path) as file:
            for line in file:
                name, _, rest = line.partition(":")
                if name in fields:
                    values[fields[name]] = int(rest.split()[0]) * 1024 / MB
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return values


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, from each process's parent in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                parent = int(file.read().rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    tree, stack = [], [pid]
    while stack:
        tree.append(stack.pop())
        stack.extend(children.get(tree[-1], []))
    return tree


def sample(pid: int, pss: bool) -> dict[str, float]:
    """One reading of the tree under `pid`: the main process's VmRSS and the tree's sums; its PSS too if `pss`."""
    keys = (*RSS_KEYS, "tree_shmem", "tree_pss_file", "processes")
    reading = {key: 0.0 for key in keys if pss or "pss" not in key}
    for index, process in enumerate(descendants(pid)):
        status = proc_fields(f"/proc/{process}/status", STATUS_FIELDS)
        if not status:
            continue
        if index == 0:
            reading["main_rss"], reading["main_anon"] = status.get("rss", 0.0), status.get("anon", 0.0)
        for name in ("rss", "anon", "file", "shmem"):
            reading[f"tree_{name}"] += status.get(name, 0.0)
        reading["processes"] += 1
        if pss:
            rollup = proc_fields(f"/proc/{process}/smaps_rollup", ROLLUP_FIELDS)
            for name in ROLLUP_FIELDS.values():
                reading[f"tree_{name}"] += rollup.get(name, 0.0)
    return reading


def run_sampled(command: list[str], log_path: Path, env: dict[str, str], pss: bool) -> dict[str, Any]:
    """Run `command` from the repo root, reading its tree's memory every SAMPLE_S (and, if `pss`, its PSS less
    often: see PSS_SHARE); the peak of each figure (each on its own: they need not peak at the same moment), the
    exit code and the wall time."""
    peaks: dict[str, float] = {}
    samples = pss_samples = 0
    next_pss = 0.0
    with open(log_path, "w") as log_file:
        start = time.time()
        process = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        while True:
            waited, status, usage = os.wait4(process.pid, os.WNOHANG)
            if waited:
                break
            began = time.perf_counter()
            with_pss = pss and began >= next_pss
            for key, value in sample(process.pid, with_pss).items():
                peaks[key] = max(peaks.get(key, 0.0), value)
            samples += 1
            if with_pss:
                pss_samples += 1
                next_pss = began + max(PSS_MIN_S, (time.perf_counter() - began) / PSS_SHARE)
            time.sleep(SAMPLE_S)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - start
    if process.returncode != 0:
        tail = log_path.read_text()[-4000:]
        raise RuntimeError(f"run failed (exit {process.returncode}): {' '.join(command)}\n{tail}")
    return {
        **{f"peak_{key}_mb": value for key, value in peaks.items() if key != "processes"},
        "peak_processes": int(peaks.get("processes", 0)),
        "ru_maxrss_mb": usage.ru_maxrss * 1024 / MB,  # the largest single process (wait4), a cross-check of main
        "samples": samples,
        "pss_samples": pss_samples,
        "wall_s": wall,
    }


def train_command(overrides: list[str], run_dir: Path, timer: Path | None = None) -> list[str]:
    timing = [
        "+callbacks.bench_timer._target_=bench_parts.EpochTimer",
        f"+callbacks.bench_timer.path={timer}",
    ] if timer else []  # fmt: skip
    return [sys.executable, "train.py", *overrides, *timing, f"hydra.run.dir={run_dir}"]


def run_all(jobs: int, runs: list[tuple[str, list[str], Path]], env: dict[str, str], pss: bool) -> list[dict[str, Any]]:
    """Each (tag, command, log) in order, `jobs` at a time (1 unless --jobs: timings need the cores to themselves)."""

    def one(run: tuple[str, list[str], Path]) -> dict[str, Any]:
        tag, command, log_path = run
        result = run_sampled(command, log_path, env, pss)
        log(f"  {tag}: wall {result['wall_s']:.1f} s, main VmRSS {result['peak_main_rss_mb']:.0f} MB")
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, runs))


# ---------------------------------------------------------------- the three parts


def disk_space_check(workdir: Path, copies: dict[str, int]) -> None:
    """Stop before writing anything where the datasets would fill the disk."""
    rows = 1797 * sum(copies.values())  # the embedded digits, each copy
    needed = 2.5 * rows * ROW_BYTES  # the finished files, plus datasets' cache of each split while it writes
    free = shutil.disk_usage(workdir).free
    if free < needed:
        log(f"ondisk.py: {workdir} has {free / MB:,.0f} MB free; the datasets need ~{needed / MB:,.0f} MB. "
            "Choose another --workdir.")  # fmt: skip
        raise SystemExit(2)


def write_datasets(workdir: Path, copies: dict[str, int], env: dict[str, str]) -> dict[str, Any]:
    """The repeated digits at each size and the plain prepared digits, written by one worker process; datasets
    already in `workdir` from an earlier run with the same source are kept, with the record of their write."""
    specs = {
        name: ["source._target_=ondisk.RepeatedDigits", f"+source.copies={count}", f"out={workdir / name}"]
        for name, count in copies.items()
    }
    specs["digits"] = [f"out={workdir / 'digits'}"]  # exactly `python prepare.py out=...`
    record_path = workdir / "writes.json"
    records = json.loads(record_path.read_text()) if record_path.is_file() else {}
    wanted = {
        name: overrides
        for name, overrides in specs.items()
        if name not in records or records[name]["source"].get("copies") != copies.get(name)
        or not (workdir / name / "prepared.json").is_file()
    }  # fmt: skip
    for name in wanted:
        shutil.rmtree(workdir / name, ignore_errors=True)
    if wanted:
        log(f"writing {', '.join(wanted)} in {workdir}")
        out = workdir / "writes-new.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "write", "--out", str(out),
                   "--specs", json.dumps(wanted)]  # fmt: skip
        log_path = workdir / "write.log"
        with open(log_path, "w") as log_file:
            if subprocess.run(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env).returncode:
                raise RuntimeError(f"writing the datasets failed:\n{log_path.read_text()[-4000:]}")
        records.update(json.loads(out.read_text()))
        record_path.write_text(json.dumps(records, indent=2))
    for name in specs:
        r = records[name]
        log(f"  {name}: {sum(r['rows'].values()):,} rows, {r['bytes'] / MB:,.1f} MB in {r['write_s']:.1f} s "
            f"({r['rows_per_s']:,.0f} rows/s){'' if name in wanted else ' (kept from before)'}")  # fmt: skip
    return {name: records[name] for name in specs}


def bench_memory(
    workdir: Path,
    rundir: Path,
    sizes: list[str],
    modes: tuple[str, ...],
    steps: int,
    repeats: int,
    extra: list[str],
    jobs: int,
    env: dict[str, str],
) -> dict[str, Any]:
    """Peak memory of a fixed-length training run over each size, memory-mapped and kept in memory."""
    check = max(steps // 3, 1)
    base = [
        "experiment=ondisk_images", "data.num_workers=2", f"trainer.max_steps={steps}",
        f"+trainer.val_check_interval={check}", "trainer.limit_val_batches=5", "trainer.limit_test_batches=5",
        "logger=none", *extra,
    ]  # fmt: skip
    plan = [(mode, size, repeat) for repeat in range(repeats) for mode in modes for size in sizes]
    runs = run_all(
        jobs,
        [
            (
                f"memory {mode} {size} #{repeat}",
                train_command(
                    [*base, f"data.path={workdir / size}", *MODES[mode]], rundir / f"mem-{mode}-{size}-{repeat}"
                ),
                rundir / f"mem-{mode}-{size}-{repeat}.log",
            )
            for mode, size, repeat in plan
        ],
        env,
        pss=True,
    )
    results: dict[str, Any] = {}
    for mode in modes:
        results[mode] = {}
        for size in sizes:
            size_runs = [run for (m, s, _), run in zip(plan, runs, strict=True) if (m, s) == (mode, size)]
            summary = {key: statistics.median(run[key] for run in size_runs) for key in size_runs[0]}
            results[mode][size] = {**summary, "runs": size_runs}
        first, last = results[mode][sizes[0]], results[mode][sizes[-1]]
        results[mode]["ratios"] = {key: last[f"peak_{key}_mb"] / first[f"peak_{key}_mb"] for key in RSS_KEYS}
    results["on-disk"]["under"] = {key: ratio < UNDER for key, ratio in results["on-disk"]["ratios"].items()}
    return results


def throughput_from(run: dict[str, Any], timer: Path, metrics: Path) -> dict[str, Any]:
    record = json.loads(timer.read_text())
    epochs = durations([*record["epoch_starts"], record["train_end"]])
    s_per_epoch = steady(epochs)
    return {
        "s_per_epoch": s_per_epoch,
        "samples_per_s": record["n_train"] / s_per_epoch,
        "callback_samples_per_s": json.loads(metrics.read_text())["train/samples_per_s"],
        "epochs_s": epochs,
        "n_train": record["n_train"],
        "peak_main_rss_mb": run["peak_main_rss_mb"],
        "wall_s": run["wall_s"],
    }


def bench_throughput(
    workdir: Path,
    rundir: Path,
    epochs: int,
    repeats: int,
    workers: tuple[int, ...],
    extra: list[str],
    jobs: int,
    env: dict[str, str],
) -> dict[str, Any]:
    """Training samples/s of the embedded digits in memory and on disk with each number of loader workers."""
    base = [f"trainer.max_epochs={epochs}", "test=false", *extra]
    ondisk = ["experiment=ondisk_images", f"data.path={workdir / 'digits'}"]
    variants = {
        "in-memory": base,
        **{f"on-disk workers={n}": [*ondisk, f"data.num_workers={n}", *base] for n in workers},
    }
    names = list(variants)
    plan = [
        (name, repeat)
        for repeat in range(repeats)
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]
    ]
    tags = {(name, repeat): f"speed-{names.index(name)}-{repeat}" for name, repeat in plan}
    raw = run_all(
        jobs,
        [
            (
                f"throughput {name} #{repeat}",
                train_command(variants[name], rundir / tags[name, repeat], rundir / f"{tags[name, repeat]}.timer.json"),
                rundir / f"{tags[name, repeat]}.log",
            )
            for name, repeat in plan
        ],
        env,
        pss=False,
    )
    results: dict[str, Any] = {}
    for name in names:
        runs = [
            throughput_from(run, rundir / f"{tags[key]}.timer.json", rundir / tags[key] / "metrics.json")
            for key, run in zip(plan, raw, strict=True)
            if key[0] == name
        ]
        summary = {key: statistics.median(run[key] for run in runs) for key in THROUGHPUT_KEYS}
        summary["s_per_epoch_min"] = min(run["s_per_epoch"] for run in runs)
        summary["s_per_epoch_max"] = max(run["s_per_epoch"] for run in runs)
        results[name] = {**summary, "repeats": len(runs), "runs": runs}
    memory = results["in-memory"]
    for name in names:
        results[name]["vs_in_memory"] = results[name]["samples_per_s"] / memory["samples_per_s"]
        results[name]["callback_vs_in_memory"] = (
            results[name]["callback_samples_per_s"] / memory["callback_samples_per_s"]
        )
    return results


# ---------------------------------------------------------------- report


def format_datasets(datasets: dict[str, Any]) -> str:
    lines = ["| dataset | copies | rows train/val/test | on disk MB | write s | rows/s |", "|---|---|---|---|---|---|"]
    for name, r in datasets.items():
        rows = "/".join(f"{r['rows'][split]:,}" for split in ("train", "val", "test"))
        copies = r["source"].get("copies", "-")
        lines.append(
            f"| {name} | {copies} | {rows} | {r['bytes'] / MB:,.1f} | {r['write_s']:.1f} | {r['rows_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def format_memory(memory: dict[str, Any], sizes: list[str]) -> str:
    header = " | ".join(f"{RSS_NAMES[key]} MB" for key in RSS_KEYS)
    lines = [f"| data | size | {header} | processes | wall s |", "|---|---|" + "---|" * (len(RSS_KEYS) + 2)]
    for mode in (mode for mode in MODES if mode in memory):
        for size in sizes:
            r = memory[mode][size]
            figures = " | ".join(f"{r[f'peak_{key}_mb']:,.0f}" for key in RSS_KEYS)
            lines.append(f"| {mode} | {size} | {figures} | {r['peak_processes']} | {r['wall_s']:.1f} |")
        ratios = " | ".join(f"**{memory[mode]['ratios'][key]:.3f}**" for key in RSS_KEYS)
        lines.append(f"| {mode} | {sizes[-1]}/{sizes[0]} | {ratios} | | |")
    ratios, under = memory["on-disk"]["ratios"], memory["on-disk"]["under"]

    def verdict(keys: list[str]) -> str:
        return ", ".join(f"{RSS_NAMES[key]} {'yes' if under[key] else 'NO'} ({ratios[key]:.3f})" for key in keys)

    with_files = [key for key in RSS_KEYS if key not in ANON_KEYS]
    ratio = f"on-disk {sizes[-1]}/{sizes[0]} under {UNDER:.2f}"
    return "\n".join(
        [
            *lines,
            "",
            f"{ratio}, anonymous memory (what the run holds): {verdict(ANON_KEYS)}",
            f"{ratio}, with mapped file pages: {verdict(with_files)}",
        ]
    )


def format_throughput(results: dict[str, Any]) -> str:
    lines = [
        "| data | s/epoch (median) | min-max | train samples/s | vs in-memory | callback samples/s | vs in-memory"
        " | peak main VmRSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['s_per_epoch']:.4f} | {r['s_per_epoch_min']:.4f}-{r['s_per_epoch_max']:.4f}"
            f" | {r['samples_per_s']:,.0f} | {r['vs_in_memory']:.2f}x | {r['callback_samples_per_s']:,.0f}"
            f" | {r['callback_vs_in_memory']:.2f}x | {r['peak_main_rss_mb']:,.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, 1 repeat, few steps, memory on-disk only, 2 workers only (CI: checks it runs)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="throughput runs per variant (default 3; quick: 1)")
    parser.add_argument("--memory-repeats", type=int, default=1, help="memory runs per size and mode (median)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs at once (default 1; quick: 2, with 1 torch thread each: timings void)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's choice)")
    parser.add_argument("--workdir", default=None, help="write the datasets here and keep them; reuse them if there")
    parser.add_argument("--keep", action="store_true", help="keep the temporary dir with the datasets and run logs")
    parser.add_argument("--json", default=None, help="write every number (and each run) to this JSON file")
    parser.add_argument("--worker", choices=("write",), help=argparse.SUPPRESS)
    parser.add_argument("--specs", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every training run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        write_worker(json.loads(args.specs), Path(args.out))
        return 0
    repeats = args.repeats or (1 if args.quick else 3)
    jobs = args.jobs or (2 if args.quick else 1)
    threads = args.threads or (1 if jobs > 1 else None)  # runs side by side: two threads each would oversubscribe
    copies = QUICK_COPIES if args.quick else COPIES
    steps, epochs = (QUICK_RSS_STEPS, QUICK_EPOCHS) if args.quick else (RSS_STEPS, EPOCHS)
    workers = QUICK_WORKERS if args.quick else WORKERS
    modes = QUICK_MODES if args.quick else tuple(MODES)
    extra = ["trainer.accelerator=cpu", *args.overrides]
    sizes = list(copies)
    report: dict[str, Any] = {
        "machine_before": machine(),
        "settings": {
            "quick": args.quick, "repeats": repeats, "memory_repeats": args.memory_repeats, "jobs": jobs,
            "threads": threads, "copies": copies, "memory_steps": steps, "epochs": epochs, "workers": list(workers),
            "memory_modes": list(modes), "extra_overrides": extra,
        },
    }  # fmt: skip
    if args.workdir:
        workdir = Path(args.workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="hydralight-ondisk-"))
    env = child_env(threads)
    try:
        disk_space_check(workdir, copies)
        report["datasets"] = write_datasets(workdir, copies, env)
        rundir = Path(tempfile.mkdtemp(dir=workdir, prefix="runs-"))  # fresh: a run dir with checkpoints resumes
        log(f"memory: {', '.join(sizes)} x {', '.join(modes)} x {args.memory_repeats}, {steps} steps")
        report["memory"] = bench_memory(workdir, rundir, sizes, modes, steps, args.memory_repeats, extra, jobs, env)
        log(f"throughput: in-memory, on-disk workers {workers} x {repeats}, {epochs} epochs")
        report["throughput"] = bench_throughput(workdir, rundir, epochs, repeats, workers, extra, jobs, env)
    finally:
        if args.keep or args.workdir:
            log(f"datasets and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["machine_after"] = machine()

    print(format_datasets(report["datasets"]))
    print()
    print(format_memory(report["memory"], sizes))
    print()
    print(format_throughput(report["throughput"]))
    load_before, load_after = report["machine_before"]["loadavg_1_5_15"], report["machine_after"]["loadavg_1_5_15"]
    print(f"\nload average (1/5/15 min) before: {load_before}, after: {load_after}; {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if not finite(report):
        log("some measurement is not finite")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
