"""The examples' own throughput settings (the callback itself: lib/tests/test_throughput.py)."""

# copier:if gpt_example
import json
from pathlib import Path

import pytest

from hydralight.core.train import train


def test_the_gpt_writes_tokens_per_s_as_samples_per_s_times_the_block_size(make_cfg):
    """experiment=shakespeare_gpt counts the tokens of its (B, T) input ids (callbacks.throughput.length_fn)."""
    cfg = make_cfg("experiment=shakespeare_gpt")
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    expected = metrics["train/samples_per_s"] * cfg.data.block_size
    assert metrics["train/tokens_per_s"] == pytest.approx(expected, rel=1e-6)


# copier:endif
