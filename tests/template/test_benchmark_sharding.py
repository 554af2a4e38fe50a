"""benchmarks/sharding.py (the template's, on the GPT) runs end to end; no timing is asserted."""

import json

import pytest

from tests.conftest import assert_ok, run_cli


@pytest.mark.slow
def test_sharding_benchmark_measures_fsdp_holding_a_share_of_the_training_state(tmp_path):
    """benchmarks/sharding.py --quick --only fsdp: each of the two processes holds about half of the model's
    parameters (and as much in gradients, twice as much in AdamW's state), and the run reports its speed."""
    out = tmp_path / "sharding.json"
    result = run_cli("benchmarks/sharding.py", "--quick", "--only", "fsdp", "--json", str(out), timeout=600)
    assert_ok(result)
    assert "state = parameters + gradients + optimizer state" in result.stdout
    fsdp = json.loads(out.read_text())["fsdp"]
    assert 0.45 < fsdp["params"] / fsdp["all_params"] < 0.55
    assert fsdp["grads"] == fsdp["params"] and fsdp["optimizer"] == pytest.approx(2 * fsdp["params"], rel=0.01)
    assert fsdp["tokens_per_s"] > 0 and fsdp["peak_rss"] > 0 and fsdp["activations"] > 0
