"""The switches whose work on the second task, the character GPT (`experiment=shakespeare_gpt`), is its own code's:
the precision its attention and MLP compute in, `compile=true` on its net, and its export (token ids in, logits out).
Shrunk to one block of width 32 over 16 characters. What each switch does on any task is the library's to prove
(lib/tests: test_numerics.py, test_dp.py, test_sharded.py, test_compile.py, ...); DDP on the GPT is
tests/test_task_gpt.py's.
"""

import functools
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate

from hydralight.core.export import FORMATS, run_exported
from hydralight.core.export import export as export_task
from hydralight.core.train import train
from hydralight.testing.numerics import load_last, read_metrics, train_with_probe
from my_project.data.shakespeare import read_text
from my_project.models.gpt import GPT
from tests.conftest import TINY, compose_config

# GradientProbe wraps optimizer.step to read the gradients the update uses; Lightning takes that for a user's mistake.
pytestmark = pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden:UserWarning")

# One block of width 32 (2 heads) over 16 characters, 8 windows a batch; TINY's 4 batches of 1 epoch. No logger: the
# metrics a test reads are in metrics.json and the checkpoints.
GPT_TINY = (
    "experiment=shakespeare_gpt",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "data.block_size=16",
    "data.batch_size=8",
    "logger=none",
)
NO_TEST = ("test=false",)  # testing changes no weight and costs time


def float_dtypes(checkpoint: dict[str, Any]) -> set[torch.dtype]:
    return {t.dtype for t in checkpoint["state_dict"].values() if t.is_floating_point()}


@pytest.mark.parametrize(
    ("precision", "computes_in", "weights_in"),
    [("bf16-mixed", torch.bfloat16, torch.float32), ("64-true", torch.float64, torch.float64)],
    ids=["bf16-mixed", "64-true"],
)
def test_the_gpt_computes_in_the_precision_asked(make_cfg, tmp_path, precision, computes_in, weights_in):
    """bf16-mixed: the attention and MLP matmuls run under bf16 autocast over float32 weights; 64-true: float64
    throughout. The losses are finite."""
    probe = train_with_probe(make_cfg(*GPT_TINY, *NO_TEST, f"precision={precision}"))
    assert probe.output_dtypes == {computes_in}
    assert float_dtypes(load_last(tmp_path / "run")) == {weights_in}
    assert "val/loss" in read_metrics(tmp_path / "run")


# torch.compile.


def test_compile_compiles_the_net_and_saves_plain_keys(make_cfg, tmp_path, caplog, monkeypatch):
    """compile=true: the net runs compiled in training (dynamo compiles frames) and the checkpoint's keys are a
    plain GPT's (no `_orig_mod.`), so it loads without compiling. The backend is aot_eager here: dynamo's tracing and
    autograd's graphs as with inductor, without its C++ code generation (tens of seconds cold, torch's own to test)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()  # an earlier compile in this process would be reused and count nothing
    counters.clear()
    caplog.set_level(logging.INFO, logger="hydralight")
    try:
        train(make_cfg(*GPT_TINY, *NO_TEST, "compile=true", "trainer.limit_val_batches=1"))
        assert counters["frames"]["ok"] >= 1, dict(counters)
    finally:
        torch._dynamo.reset()
    assert any(message.endswith("GPT, compiled (net)") for message in caplog.messages), caplog.messages
    plain = instantiate(make_cfg(*GPT_TINY).model)  # never compiled
    plain.load_state_dict(load_last(tmp_path / "run")["state_dict"])  # strict: the very same keys


# Export.


@pytest.fixture(scope="module")
def gpt_checkpoint(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("gpt") / "run"
    train(compose_config("train", run_dir, (*TINY, *GPT_TINY, *NO_TEST)))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_writes_a_file_whose_outputs_match_the_checkpoints(make_cfg, gpt_checkpoint, fmt):
    """Each format exports the GPT (token ids in, logits out) and export checks it; loaded back, the file gives the
    checkpoint's logits on real text, any character id, at another batch size."""
    if fmt == "onnx":
        for package in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(package)
    cfg = make_cfg(f"ckpt_path={gpt_checkpoint}", f"format={fmt}", config_name="export", tiny=False)
    result = export_task(cfg)
    assert result["max_abs_diff"] <= cfg.tolerance
    model = GPT.load_from_checkpoint(gpt_checkpoint, map_location="cpu", weights_only=True).eval()
    ids = model.encode(read_text()[: 3 * 16]).view(3, 16)  # "First Citizen:\nBefore we proceed ...": capitals too
    assert ids.max() >= 16  # past the 16 positions: a token id is no position id
    with torch.no_grad():
        expected = model(ids)
    assert (run_exported(Path(result["path"]), fmt, ids) - expected).abs().max().item() <= cfg.tolerance
