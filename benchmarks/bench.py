"""How far is hydralight from a plain PyTorch loop?  python benchmarks/bench.py [--quick] [--json out.json]

Runs the same training three ways, each in its own process (so imports, memory and warm caches never leak between
them), and reports the medians over `--repeats` runs:

  plain       a hand-written PyTorch loop: randperm + tensor slicing, forward/backward/step, a validation pass each
              epoch (loss and accuracy), one host sync per epoch. The floor.
  hydralight  `python train.py <overrides>`, the real CLI and training path with the default callbacks, logger and
              test, plus one timing callback added through the config (`+callbacks.bench_timer`).
  lightning   Lightning without Hydra or the template: a minimal LightningModule, DataLoader(TensorDataset), and a
              Trainer with checkpointing, logger, progress bar and model summary off.
  lightning_defaults  the same module and loaders with the Trainer as a user writes it without a template: a
              checkpoint every epoch, a CSV logger, the progress bar and the model summary (its defaults).

All three read the same composed config (net, optimizer, batch size, epochs, seed) and the same in-memory tensors.
Sizes: `digits` (the default run: MLP, 1,258 train / 180 val images of 8x8, 20 epochs) and `mnist60k` (60,000
random 1x28x28 images in memory, 55,000 train / 5,000 val, the residual CNN). Metrics: steady-state seconds per
epoch (median over epochs 2..N, so imports and the first epoch are excluded; an epoch includes its validation pass),
training samples/s at that rate, time from process start to the end of the first training step, peak RSS, and the
ratios to plain of each, and the template's to Lightning's two (hydralight/lightning_defaults, hydralight/lightning).
`--cli` adds the wall time of `train.py --help`, `--cfg job`, a config error, the default `python train.py` and
`python -c "import lightning"`.

`--switches` measures what the performance switches cost or gain on the real path (bf16, torch.compile, float32
matmul precision, DataLoader workers, the allocator setting; 16-mixed and pinned memory when a GPU is present).
`--accelerator gpu` runs everything on CUDA; `auto` uses a GPU when there is one.
"""

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VARIANTS = ("plain", "hydralight", "lightning", "lightning_defaults")
# Lightning's own worker variants: bare (nothing written or drawn), or with the Trainer's defaults.
LIGHTNING_WORKERS = ("lightning", "lightning_defaults")

# Each size is a set of overrides of the real config; every variant reads its settings from the composed result.
MNIST_SHAPED = [
    "data=mnist",
    "data._target_=bench_parts.SyntheticMNISTDataModule",
    "model/net=cnn",
    "trainer.max_epochs=3",
]
SIZES: dict[str, list[str]] = {
    "digits": [],  # the default run, exactly
    "mnist60k": [
        *MNIST_SHAPED,
        "+data.size=60000",
        "model.net.channels=[8,16]",  # the cnn default ([32,64]) is ~8x the compute: ~60 s/epoch on 2 idle cores
        "test=false",  # the test pass is not timed; skip it to keep the benchmark short
    ],
}
QUICK_SIZES: dict[str, list[str]] = {
    "digits": ["trainer.max_epochs=3"],
    "mnist60k": [
        *MNIST_SHAPED,
        "+data.size=2048",
        "data.val_size=256",
        "+data.test_size=256",
        "model.net.channels=[4,8]",
    ],
}
# What --switches runs on the real path, as extra overrides (name -> overrides).
SWITCHES: dict[str, list[str]] = {
    "default (fp32)": [],
    "precision=bf16-mixed": ["precision=bf16-mixed"],
    "compile=true": ["compile=true"],
    "float32_matmul_precision=high": ["float32_matmul_precision=high"],
    "float32_matmul_precision=medium": ["float32_matmul_precision=medium"],
    "cpu_threads=1": ["cpu_threads=1"],
    "data.num_workers=2": ["data.num_workers=2", "data.persistent_workers=true"],
    "keep_freed_memory=false": ["keep_freed_memory=false"],
}
GPU_SWITCHES: dict[str, list[str]] = {
    "precision=16-mixed": ["precision=16-mixed"],
    "data.pin_memory=true": ["data.pin_memory=true"],
}
CLI_COMMANDS: dict[str, list[str]] = {
    "train.py --help": ["train.py", "--help"],
    "train.py --cfg job": ["train.py", "--cfg", "job"],
    "train.py precision=8 (config error)": ["train.py", "precision=8"],
}
# The default run is judged against what it cannot avoid, `import lightning` (not in --quick: ~10 s it adds).
TRAINING_CLI_COMMANDS: dict[str, list[str]] = {
    "import lightning": ["-c", "import lightning"],
    "train.py (default run)": ["train.py"],
}
SUMMARY_KEYS = (
    "s_per_epoch", "cpu_s_per_epoch", "samples_per_s", "first_step_s", "peak_rss_mb", "page_faults_k", "wall_s"
)  # fmt: skip


# ---------------------------------------------------------------- worker side (one process per run)


def use_cuda(cfg: Any) -> bool:
    import torch

    return cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def in_memory_splits(cfg: Any) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """The train and val tensors of the configured datamodule: the very data the template trains on."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule.splits["train"].tensors, datamodule.splits["val"].tensors


def run_plain(cfg: Any) -> dict[str, Any]:
    """The floor: the loop a careful user writes by hand."""
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    torch.manual_seed(cfg.seed)
    (x_train, y_train), (x_val, y_val) = in_memory_splits(cfg)
    device = torch.device("cuda" if use_cuda(cfg) else "cpu")
    x_train, y_train, x_val, y_val = (t.to(device) for t in (x_train, y_train, x_val, y_val))
    net = instantiate(cfg.model.net, _convert_="all").to(device)
    optimizer = instantiate(cfg.model.optimizer, _convert_="all")(net.parameters())
    batch_size, generator = cfg.data.batch_size, torch.Generator().manual_seed(cfg.seed)

    epoch_starts, cpu_epoch_starts, first_step = [], [], None
    for _ in range(cfg.trainer.max_epochs):
        epoch_starts.append(time.time())
        cpu_epoch_starts.append(time.process_time())
        net.train()
        train_loss = torch.zeros((), device=device)
        for index in torch.randperm(len(y_train), generator=generator).split(batch_size):
            index = index.to(device)
            x, y = x_train[index], y_train[index]
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            train_loss += loss.detach() * len(y)
            if first_step is None:
                loss.item()  # the step has really finished (CUDA is asynchronous)
                first_step = time.time()
        net.eval()
        val_loss, val_correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
        with torch.no_grad():
            for start in range(0, len(y_val), batch_size):
                x, y = x_val[start : start + batch_size], y_val[start : start + batch_size]
                logits = net(x)
                val_loss += F.cross_entropy(logits, y, reduction="sum")
                val_correct += (logits.argmax(dim=1) == y).sum()
        _ = (train_loss.item(), val_loss.item(), val_correct.item())  # one host sync per epoch, as a logger would
    return {
        "epoch_starts": epoch_starts,
        "train_end": time.time(),
        "cpu_epoch_starts": cpu_epoch_starts,
        "cpu_train_end": time.process_time(),
        "first_step": first_step,
        "n_train": len(y_train),
        "n_val": len(y_val),
        "threads": torch.get_num_threads(),
    }


def run_lightning(cfg: Any, timer_path: Path, defaults: bool) -> dict[str, Any]:
    """Lightning as the docs' first example writes it: no Hydra, no template; bare (no I/O), or with the Trainer's
    defaults (`defaults`: a checkpoint every epoch, a CSV logger, the progress bar and the model summary)."""
    import lightning.pytorch as pl
    import torch.nn.functional as F
    from bench_parts import EpochTimer
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    class LitClassifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = instantiate(cfg.model.net, _convert_="all")

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train/loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self.net(x)
            self.log("val/loss", F.cross_entropy(logits, y), on_epoch=True)
            self.log("val/acc", (logits.argmax(dim=1) == y).float().mean(), on_epoch=True)

        def configure_optimizers(self) -> Any:
            return instantiate(cfg.model.optimizer, _convert_="all")(self.parameters())

    pl.seed_everything(cfg.seed, verbose=False)
    (x_train, y_train), (x_val, y_val) = in_memory_splits(cfg)
    batch_size = cfg.data.batch_size
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=batch_size)
    root = timer_path.with_suffix("").with_suffix("")  # <workdir>/<tag>: checkpoints and logs, when written
    # The defaults' logger is TensorBoard where it is installed: CSV here in either case, as the comparison says.
    bare = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = pl.Trainer(
        accelerator="gpu" if use_cuda(cfg) else "cpu",
        devices=1,
        max_epochs=cfg.trainer.max_epochs,
        precision=cfg.precision,
        default_root_dir=root,
        callbacks=[EpochTimer(str(timer_path))],
        **({"logger": CSVLogger(root)} if defaults else bare),
    )
    trainer.fit(LitClassifier(), train_loader, val_loader)
    record = json.loads(timer_path.read_text())
    record.update(n_train=len(y_train), n_val=len(y_val))
    return record


def worker(args: argparse.Namespace) -> None:
    """One run of one variant; writes its timing record as JSON to --out."""
    from hydralight.testing import compose_config

    sys.path.insert(0, str(BENCH_DIR))
    out = Path(args.out)
    cfg = compose_config("train", out.with_suffix(""), args.overrides, root_dir=ROOT, conf=ROOT / "conf")
    if args.worker == "plain":
        record = run_plain(cfg)
    else:
        record = run_lightning(cfg, out.with_suffix(".timer.json"), defaults=args.worker == "lightning_defaults")
    out.write_text(json.dumps(record))


# ---------------------------------------------------------------- parent side (spawns, collects, reports)


def spawn(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> tuple[float, int, Any]:
    """Run `command` from the repo root; return (start time, exit code, its resource usage).

    The usage is the process's and its waited-for children's: ru_maxrss (KiB on Linux) is the largest of them,
    ru_minflt the page faults that needed no disk (memory the allocator gave back to the OS and touched again)."""
    with open(log_path, "w") as log:
        start = time.time()
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return start, process.returncode, usage


def child_env(threads: int | None = None) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op thread count
    return env


def run_once(variant: str, overrides: list[str], workdir: Path, tag: str, threads: int | None) -> dict[str, Any]:
    """One process of one variant; the timing record plus wall time, exit code and peak RSS."""
    out = workdir / f"{tag}.json"
    if variant == "hydralight":
        command = [
            sys.executable, "train.py", *overrides,
            f"hydra.run.dir={workdir / tag}",
            "+callbacks.bench_timer._target_=bench_parts.EpochTimer",
            f"+callbacks.bench_timer.path={out}",
        ]  # fmt: skip
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--out", str(out), "--",
                   *overrides]  # fmt: skip
    log_path = workdir / f"{tag}.log"
    start, returncode, usage = spawn(command, log_path, child_env(threads))
    wall = time.time() - start
    if returncode != 0 or not out.is_file():
        tail = log_path.read_text()[-4000:]
        raise RuntimeError(f"{variant} run failed (exit {returncode}): {' '.join(command)}\n{tail}")
    record = json.loads(out.read_text())
    return summarize(record, start, wall, usage)


def durations(bounds: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(bounds)]


def steady(epochs: list[float]) -> float:
    """The median epoch after the first (which pays for lazy initialisation, allocator warm-up, ...)."""
    return statistics.median(epochs[1:] or epochs)


def summarize(record: dict[str, Any], start: float, wall: float, usage: Any) -> dict[str, Any]:
    epochs = durations([*record["epoch_starts"], record["train_end"]])
    cpu_epochs = durations([*record["cpu_epoch_starts"], record["cpu_train_end"]])
    s_per_epoch = steady(epochs)
    return {
        "s_per_epoch": s_per_epoch,
        "cpu_s_per_epoch": steady(cpu_epochs),
        "samples_per_s": record["n_train"] / s_per_epoch,
        "first_step_s": record["first_step"] - start,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "page_faults_k": usage.ru_minflt / 1000,
        "wall_s": wall,
        "epochs_s": epochs,
        "n_train": record["n_train"],
        "n_val": record["n_val"],
        "threads": record["threads"],
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary = {key: statistics.median(run[key] for run in runs) for key in SUMMARY_KEYS}
    summary["s_per_epoch_min"] = min(run["s_per_epoch"] for run in runs)
    summary["s_per_epoch_max"] = max(run["s_per_epoch"] for run in runs)
    summary["repeats"] = len(runs)
    summary["runs"] = runs
    return summary


def bench_sizes(
    sizes: dict[str, list[str]],
    variants: list[str],
    repeats: int,
    extra: list[str],
    workdir: Path,
    threads: int | None = None,
) -> dict[str, Any]:
    """Every variant of every size, `repeats` times; the order of the variants rotates from one repeat to the next,
    so a burst of load from elsewhere does not always hit the same variant."""
    runs: dict[str, dict[str, list]] = {size: {variant: [] for variant in variants} for size in sizes}
    for repeat in range(repeats):
        for size, overrides in sizes.items():
            order = variants[repeat % len(variants) :] + variants[: repeat % len(variants)]
            for variant in order:
                tag = f"{size}-{variant}-{repeat}"
                result = run_once(variant, [*overrides, *extra], workdir, tag, threads)
                runs[size][variant].append(result)
                log(f"  {tag}: {result['s_per_epoch']:.4f} s/epoch, first step {result['first_step_s']:.2f} s, "
                    f"wall {result['wall_s']:.2f} s")  # fmt: skip
    results: dict[str, Any] = {}
    for size, by_variant in runs.items():
        results[size] = {variant: median_of(variant_runs) for variant, variant_runs in by_variant.items()}
        plain = results[size].get("plain")
        if plain:
            results[size]["ratios"] = {
                f"{variant}/plain": results[size][variant]["s_per_epoch"] / plain["s_per_epoch"]
                for variant in variants
                if variant != "plain"
            }
        template = results[size].get("hydralight")
        for other in LIGHTNING_WORKERS:  # the template against Lightning as a user writes it, and bare
            if template and other in results[size]:
                ratios = results[size].setdefault("ratios", {})
                ratios[f"hydralight/{other}"] = template["s_per_epoch"] / results[size][other]["s_per_epoch"]
    return results


def bench_switches(
    size: str,
    overrides: list[str],
    switches: dict[str, list[str]],
    repeats: int,
    extra: list[str],
    workdir: Path,
    threads: int | None = None,
) -> dict[str, Any]:
    """The real path (train.py) once per switch and repeat; s/epoch and first-step time relative to the default."""
    runs: dict[str, list] = {name: [] for name in switches}
    names = list(switches)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            tag = f"switch-{size}-{len(runs[name])}-{names.index(name)}-{repeat}"
            result = run_once("hydralight", [*overrides, *extra, *switches[name]], workdir, tag, threads)
            runs[name].append(result)
            log(f"  {size} {name}: {result['s_per_epoch']:.4f} s/epoch, first step {result['first_step_s']:.2f} s")
    results = {name: median_of(name_runs) for name, name_runs in runs.items()}
    base = results[names[0]]["s_per_epoch"]
    for name in names:
        results[name]["vs_default"] = results[name]["s_per_epoch"] / base
    return results


def bench_cli(repeats: int, workdir: Path, threads: int | None = None, training: bool = True) -> dict[str, Any]:
    """Wall time of the CLI paths a user waits for, from process start to exit (torch threads as for training)."""
    results: dict[str, Any] = {}
    for name, args in {**CLI_COMMANDS, **(TRAINING_CLI_COMMANDS if training else {})}.items():
        walls, codes = [], []
        for repeat in range(repeats):
            run_dir = [f"hydra.run.dir={workdir / f'cli-{repeat}'}"] if args[0] == "train.py" else []
            start, returncode, _ = spawn([sys.executable, *args, *run_dir], workdir / "cli.log", child_env(threads))
            walls.append(time.time() - start)
            codes.append(returncode)
        results[name] = {"wall_s": statistics.median(walls), "walls_s": walls, "exit_codes": sorted(set(codes))}
        log(f"  {name}: {results[name]['wall_s']:.2f} s (exit {codes[0]})")
    if training:
        results["default run minus import lightning"] = {
            "wall_s": results["train.py (default run)"]["wall_s"] - results["import lightning"]["wall_s"]
        }
    return results


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_1_5_15": [round(value, 2) for value in load],
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- report


def format_table(results: dict[str, Any]) -> str:
    lines = [
        "| size | variant | s/epoch | min-max | vs plain | CPU s/epoch | train samples/s | first step s | peak RSS MB"
        " | page faults k | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, by_variant in results.items():
        base = by_variant.get("plain", {}).get("s_per_epoch")
        for variant in VARIANTS:
            if variant not in by_variant:
                continue
            r = by_variant[variant]
            ratio = f"{r['s_per_epoch'] / base:.2f}x" if base else "-"
            lines.append(
                f"| {size} | {variant} | {r['s_per_epoch']:.4f} | {r['s_per_epoch_min']:.4f}-{r['s_per_epoch_max']:.4f}"
                f" | {ratio} | {r['cpu_s_per_epoch']:.4f} | {r['samples_per_s']:,.0f} | {r['first_step_s']:.2f}"
                f" | {r['peak_rss_mb']:.0f} | {r['page_faults_k']:,.0f} | {r['wall_s']:.2f} |"
            )
    return "\n".join(lines)


def format_switches(size: str, results: dict[str, Any]) -> str:
    lines = [
        f"| switch ({size}) | s/epoch (median) | vs default | first step s | peak RSS MB | page faults k |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['s_per_epoch']:.4f} | {r['vs_default']:.2f}x | {r['first_step_s']:.2f}"
            f" | {r['peak_rss_mb']:.0f} | {r['page_faults_k']:,.0f} |"
        )
    return "\n".join(lines)


def format_cli(results: dict[str, Any]) -> str:
    lines = ["| command | wall s (median) |", "|---|---|"]
    lines += [f"| {name} | {r['wall_s']:.2f} |" for name, r in results.items()]
    return "\n".join(lines)


def finite(value: Any) -> bool:
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def choices(option: str, value: str, valid: Any) -> list[str]:
    """The comma-separated names of `value`; a name not in `valid` stops the benchmark naming the valid ones."""
    names = [name for name in value.split(",") if name]
    unknown = [name for name in names if name not in valid]
    if unknown:
        log(f"bench.py: {option}: unknown {', '.join(map(repr, unknown))}; choose from: {', '.join(valid)}")
        raise SystemExit(2)
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (CI: checks it runs, not speed)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per variant and size (default 5; quick: 1)")
    parser.add_argument("--sizes", default="digits,mnist60k", help="comma-separated: digits, mnist60k")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--cli", action=argparse.BooleanOptionalAction, default=True, help="time the CLI paths")
    parser.add_argument("--switches", default="", help="time the switches on these sizes too, e.g. digits,mnist60k")
    parser.add_argument("--only", default="", help="with --switches: only these switches (comma-separated names)")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu", "auto"), help="trainer.accelerator")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's choice)")
    parser.add_argument("--json", default=None, help="write every number (and each run) to this JSON file")
    parser.add_argument("--worker", choices=("plain", *LIGHTNING_WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. data.batch_size=128")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    repeats = args.repeats or (1 if args.quick else 5)
    table = QUICK_SIZES if args.quick else SIZES
    sizes = {name: table[name] for name in choices("--sizes", args.sizes, table)}
    variants = choices("--variants", args.variants, VARIANTS)
    switch_sizes = choices("--switches", args.switches, SIZES)
    switches = {**SWITCHES, **(GPU_SWITCHES if args.accelerator != "cpu" else {})}
    if args.only:
        switches = {name: switches[name] for name in ["default (fp32)", *choices("--only", args.only, switches)]}
    extra = [f"trainer.accelerator={args.accelerator}", *args.overrides]
    report: dict[str, Any] = {
        "machine_before": machine(),
        "settings": {
            "quick": args.quick,
            "repeats": repeats,
            "threads": args.threads,
            "sizes": sizes,
            "extra_overrides": extra,
        },
    }
    with tempfile.TemporaryDirectory(prefix="hydralight-bench-") as tmp:
        workdir = Path(tmp)
        log(f"training: {', '.join(sizes)} x {', '.join(variants)} x {repeats}")
        report["results"] = bench_sizes(sizes, variants, repeats, extra, workdir, args.threads)
        if switch_sizes:
            report["switches"] = {}
            for size in switch_sizes:
                log(f"switches on {size}")
                report["switches"][size] = bench_switches(
                    size, table[size], switches, repeats, extra, workdir, args.threads
                )
        if args.cli:
            log("CLI paths")
            report["cli"] = bench_cli(repeats, workdir, args.threads, training=not args.quick)
    report["machine_after"] = machine()

    print(format_table(report["results"]))
    for size, results in report.get("switches", {}).items():
        print()
        print(format_switches(size, results))
    if "cli" in report:
        print()
        print(format_cli(report["cli"]))
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
