"""Memory per process and speed of the GPT under one process, DDP, FSDP2 (with and without activation checkpointing)
and tensor parallelism, 2 processes each, on this machine.

    python benchmarks/sharding.py [--quick] [--only single,ddp,fsdp,fsdp_checkpointed,tensor_parallel] [--json F]

Each strategy is one `python train.py experiment=shakespeare_gpt ...` in a scratch dir, with a wider GPT than the
recipe's (so the training state, not the interpreter, dominates memory) and a probe callback
(`sharding_probe.StateMemory`, imported only by the training processes) that writes, per process: the bytes of its
parameters, gradients and optimizer state as it holds them (its shards, for DTensors), the activations its first
forward keeps for the backward, and its peak RSS. It prints those, their ratio to DDP's, and tokens/s (world-wide,
from metrics.json) against one process. `--quick`: a tiny model and 4 steps (checks that it runs; times nothing).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
STRATEGIES = {
    "single": ("trainer.devices=1",),
    "ddp": ("strategy=ddp", "trainer.devices=2"),
    "fsdp": ("strategy=fsdp", "trainer.devices=2"),
    "fsdp_checkpointed": ("strategy=fsdp", "trainer.devices=2", "strategy.activation_checkpointing=true"),
    "tensor_parallel": ("strategy=model_parallel", "trainer.devices=2", "strategy.tensor_parallel_size=2"),
}
MODEL = ("model.n_layer=4", "model.n_head=6", "model.n_embd=384", "data.batch_size=8", "trainer.limit_train_batches=12")
QUICK = ("model.n_layer=2", "model.n_head=2", "model.n_embd=32", "data.batch_size=8", "trainer.limit_train_batches=4")
COMMON = (
    "experiment=shakespeare_gpt",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_val_batches=1",
    "test=false",
    "logger=none",
    "~callbacks.progress_bar",
    "trainer.enable_progress_bar=false",
)


def measure(name: str, sizes: tuple[str, ...], scratch: Path) -> dict[str, float]:
    """One training run of strategy `name`: the largest process's figures (MiB) and the world's tokens/s."""
    probe, run_dir = scratch / name / "probe", scratch / name / "run"
    probe_callback = (
        "+callbacks.state_memory._target_=sharding_probe.StateMemory",
        f"+callbacks.state_memory.folder={probe}",
    )
    command = [sys.executable, str(ROOT / "train.py"), *COMMON, *sizes, *STRATEGIES[name], *probe_callback,
               f"hydra.run.dir={run_dir}"]  # fmt: skip
    # The training processes import the probe from this folder.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH")))),
    }
    result = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{name} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    ranks = [json.loads(path.read_text()) for path in sorted(probe.glob("rank*.json"))]
    keys = ("params", "all_params", "grads", "optimizer", "activations", "peak_rss")
    figures = {key: max(rank[key] for rank in ranks) / MIB for key in keys}
    figures["state"] = figures["params"] + figures["grads"] + figures["optimizer"]
    figures["tokens_per_s"] = json.loads((run_dir / "metrics.json").read_text())["train/tokens_per_s"]
    return figures


def table(results: dict[str, dict[str, float]]) -> str:
    ddp, single = results.get("ddp"), results.get("single")
    lines = [f"{'strategy':<18} {'params':>8} {'grads':>8} {'optim':>8} {'state':>8} {'vs ddp':>7} "
             f"{'activ.':>8} {'peak RSS':>9} {'vs ddp':>7} {'tokens/s':>9} {'vs 1 proc':>9}"]  # fmt: skip
    for name, figures in results.items():
        state_ratio = f"{figures['state'] / ddp['state']:.2f}" if ddp else "-"
        rss_ratio = f"{figures['peak_rss'] / ddp['peak_rss']:.2f}" if ddp else "-"
        speed_ratio = f"{figures['tokens_per_s'] / single['tokens_per_s']:.2f}" if single else "-"
        lines.append(
            f"{name:<18} {figures['params']:>8.1f} {figures['grads']:>8.1f} {figures['optimizer']:>8.1f} "
            f"{figures['state']:>8.1f} {state_ratio:>7} {figures['activations']:>8.1f} "
            f"{figures['peak_rss']:>9.0f} {rss_ratio:>7} "
            f"{figures['tokens_per_s']:>9,.0f} {speed_ratio:>9}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model, 4 steps: checks that it runs")
    parser.add_argument("--only", default=",".join(STRATEGIES), help="comma-separated, from: " + ", ".join(STRATEGIES))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    names = args.only.split(",")
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown:
        parser.error(f"--only {','.join(unknown)}: not a strategy here. Choose from: {', '.join(STRATEGIES)}")
    with tempfile.TemporaryDirectory() as scratch:
        results = {name: measure(name, QUICK if args.quick else MODEL, Path(scratch)) for name in names}
    print("MiB per process (the largest); state = parameters + gradients + optimizer state; activ. = what the first")
    print("forward keeps for the backward")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
