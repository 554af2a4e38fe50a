"""benchmarks/ondisk.py --quick runs end to end, so the benchmark never rots. No timing and no ratio is asserted:
whether memory stays flat and what workers cost is what the benchmark reports, not what a test decides."""

import json
import math

import pytest

from tests.conftest import assert_ok, run_cli

pytest.importorskip("datasets")

SIZES = ("1x", "4x")  # --quick's: the full run has 1x and 20x
MODES = ("on-disk",)  # --quick's: the full run adds in-memory (data.keep_in_memory=true)
RATIO_KEYS = ("main_rss", "main_anon", "tree_rss", "tree_anon", "tree_file", "tree_pss", "tree_pss_anon")
MEMORY_KEYS = tuple(f"peak_{key}_mb" for key in RATIO_KEYS)
VARIANTS = ("in-memory", "on-disk workers=2")  # --quick: the full run adds workers=0 and 1
THROUGHPUT_KEYS = ("s_per_epoch", "samples_per_s", "callback_samples_per_s", "vs_in_memory", "callback_vs_in_memory")


def positive_and_finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_ondisk_benchmark_reports_every_number(tmp_path):
    out = tmp_path / "ondisk.json"
    result = run_cli("benchmarks/ondisk.py", "--quick", "--json", str(out), timeout=900)
    assert_ok(result)
    assert "| on-disk | 4x/1x |" in result.stdout and "| on-disk workers=2 |" in result.stdout

    report = json.loads(out.read_text())
    assert report["settings"]["quick"] is True and report["settings"]["repeats"] == 1
    for name in (*SIZES, "digits"):
        written = report["datasets"][name]
        assert all(positive_and_finite(written[key]) for key in ("write_s", "bytes", "rows_per_s")), written
        assert all(positive_and_finite(rows) for rows in written["rows"].values()), written
    assert report["datasets"]["4x"]["rows"]["train"] == 4 * report["datasets"]["1x"]["rows"]["train"]
    for mode in MODES:
        for size in SIZES:
            peaks = report["memory"][mode][size]
            assert all(positive_and_finite(peaks[key]) for key in MEMORY_KEYS), (mode, size, peaks)
            assert peaks["peak_processes"] > 1  # the loader workers were found and counted
        assert all(positive_and_finite(report["memory"][mode]["ratios"][key]) for key in RATIO_KEYS), mode
    assert set(report["memory"]) == set(MODES)
    assert set(report["memory"]["on-disk"]["under"]) == set(RATIO_KEYS)
    assert set(report["throughput"]) == set(VARIANTS)
    for variant in VARIANTS:
        figures = report["throughput"][variant]
        assert all(positive_and_finite(figures[key]) for key in THROUGHPUT_KEYS), (variant, figures)
