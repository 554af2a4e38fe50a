"""benchmarks/async_checkpoint.py (the template's, on the digits) runs end to end; no timing is asserted. What
async_checkpoint=true does is the library's: lib/tests/test_async_checkpoint.py."""

import json
import math

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_quick_async_checkpoint_benchmark_reports_every_number(tmp_path):
    out = tmp_path / "async.json"
    result = run_cli("benchmarks/async_checkpoint.py", "--quick", "--json", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    assert "| sync |" in result.stdout and "| async |" in result.stdout and "async/sync: " in result.stdout
    report = json.loads(out.read_text())["results"]
    assert set(report["variants"]) == {"none", "sync", "async"}
    for variant in report["variants"].values():
        (run,) = variant["runs"]
        assert len(run["epochs_s"]) == 2 and all(math.isfinite(s) and s > 0 for s in run["epochs_s"])
    assert math.isfinite(report["async/sync"]) and report["async/sync"] > 0
    assert report["checkpoint_mb"] > 0 and report["saves_per_epoch"] >= 1
