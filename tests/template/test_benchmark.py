"""benchmarks/bench.py --quick runs end to end, so the benchmark never rots. No timing is asserted: CI machines are
noisy, and speed is what the benchmark reports, not what a test decides."""

import json
import math

import pytest

from tests.conftest import assert_ok, run_cli

VARIANTS = ("plain", "hydralight", "lightning", "lightning_defaults")
RUN_KEYS = ("s_per_epoch", "cpu_s_per_epoch", "samples_per_s", "first_step_s", "peak_rss_mb", "page_faults_k", "wall_s")
CLI_KEYS = ("train.py --help", "train.py --cfg job", "train.py precision=8 (config error)")


def positive_and_finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_benchmark_reports_every_number(tmp_path):
    """One size (the default digits): the other size runs the same code on a larger synthetic set."""
    out = tmp_path / "bench.json"
    result = run_cli("benchmarks/bench.py", "--quick", "--sizes", "digits", "--json", str(out), timeout=600)
    assert_ok(result)
    assert "| digits | hydralight |" in result.stdout and "| digits | plain |" in result.stdout

    report = json.loads(out.read_text())
    assert report["settings"]["quick"] is True and report["settings"]["repeats"] == 1
    assert report["results"].keys() == {"digits"}
    by_variant = report["results"]["digits"]
    for variant in VARIANTS:
        summary = by_variant[variant]
        assert all(positive_and_finite(summary[key]) for key in RUN_KEYS), (variant, summary)
        (run,) = summary["runs"]
        assert run["n_train"] > 0 and len(run["epochs_s"]) == 3
    assert set(by_variant["ratios"]) == {
        "hydralight/plain",
        "lightning/plain",
        "lightning_defaults/plain",
        "hydralight/lightning",
        "hydralight/lightning_defaults",
    }
    assert all(positive_and_finite(ratio) for ratio in by_variant["ratios"].values())
    cli = report["cli"]
    assert set(CLI_KEYS) <= cli.keys()
    assert all(math.isfinite(cli[key]["wall_s"]) for key in CLI_KEYS)
    assert cli["train.py --help"]["exit_codes"] == [0]
    assert cli["train.py precision=8 (config error)"]["exit_codes"] == [2]
    assert len(report["machine_before"]["loadavg_1_5_15"]) == 3


@pytest.mark.parametrize(
    ("option", "value", "valid"),
    [
        ("--sizes", "digit", "digits, mnist60k"),
        ("--only", "bf16", "precision=bf16-mixed"),
        ("--variants", "x", "plain"),
    ],
)
def test_an_unknown_name_stops_before_any_run_naming_the_choices(option, value, valid):
    result = run_cli("benchmarks/bench.py", "--switches", "digits", option, value, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{option}: unknown '{value}'" in result.stderr and valid in result.stderr
    assert "training:" not in result.stderr  # nothing ran


@pytest.mark.gpu
def test_quick_benchmark_on_a_gpu_runs_every_variant_and_the_gpu_switches(tmp_path):
    """--accelerator gpu: the plain loop on CUDA, the template with trainer.accelerator=gpu, fp16 AMP and pinned
    memory among the switches."""
    out = tmp_path / "bench.json"
    args = ("--quick", "--accelerator", "gpu", "--sizes", "mnist60k", "--no-cli", "--switches", "mnist60k")
    result = run_cli("benchmarks/bench.py", *args, "--only", "precision=16-mixed,data.pin_memory=true",
                     "--json", str(out), timeout=600)  # fmt: skip
    assert_ok(result)
    report = json.loads(out.read_text())
    assert set(report["switches"]["mnist60k"]) == {"default (fp32)", "precision=16-mixed", "data.pin_memory=true"}
    assert all(positive_and_finite(r["s_per_epoch"]) for r in report["switches"]["mnist60k"].values())
