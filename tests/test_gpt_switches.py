"""Every switch of the template on the second task, the character GPT (`experiment=shakespeare_gpt`), shrunk to one
block of width 32 over 16 characters. Each test checks that the switch took effect (the dtype the net computes in,
the optimizer steps taken, the gradients the update used, the wrapped or compiled net, the ranking,
the exported file's outputs), not only that the run finished.

In-process through the real `train()` / `export()` on the composed configs; the CLI as a subprocess only where the
process boundary is the point (`-m` runs a sweep), typed in a scratch dir with the default sweep dir. DDP on the
GPT is tests/test_task_gpt.py's (2 processes equal 1 on the doubled batch).
"""

import json
import logging
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule, Trainer
from omegaconf import DictConfig
from torch import nn

from hydralight.core.export import FORMATS, run_exported
from hydralight.core.export import export as export_task
from hydralight.core.strategies import DataParallelStrategy
from hydralight.core.train import train
from my_project.data.shakespeare import read_text
from my_project.models.gpt import GPT
from tests.conftest import ROOT, TINY, assert_ok, compose_config, run_cli
from tests.test_numerics import GradientProbe, load_last, train_with_probe

# SwitchProbe wraps optimizer.step to read the gradients the update uses; Lightning takes that for a user's mistake.
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
NO_TEST = ("test=false",)  # testing changes no weight and costs time: only where its metrics are checked
# The command line of the subprocess tests: 64 windows of 8 a epoch, so 8 steps in one process, 4 in each of two.
GPT_COMMAND = (
    *GPT_TINY,
    "data.samples_per_epoch=64",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
)


class SwitchProbe(GradientProbe):
    """GradientProbe (the gradients before clipping and where the optimizer steps, the trainer's precision, the dtype
    of the net's outputs), plus the training batches seen, the optimizer steps taken, the strategy and the type of the
    net while it trains (strategy=dp wraps it)."""

    def __init__(self) -> None:
        super().__init__()
        self.train_batches = 0
        self.global_step: int | None = None
        self.strategy: type | None = None
        self.net_types: set[type] = set()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.train_batches += 1
        self.net_types.add(type(pl_module.net))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.global_step = trainer.global_step
        self.strategy = type(trainer.strategy)


def train_probed(cfg: DictConfig) -> SwitchProbe:
    return train_with_probe(cfg, SwitchProbe)


def float_dtypes(checkpoint: dict[str, Any]) -> set[torch.dtype]:
    return {t.dtype for t in checkpoint["state_dict"].values() if t.is_floating_point()}


def read_metrics(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "val/loss" in metrics and all(math.isfinite(value) for value in metrics.values()), metrics
    return metrics


def run_in(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python <repo>/train.py <args>` typed in `cwd`, so every run and sweep dir is the default one under cwd."""
    return run_cli(str(ROOT / "train.py"), *args, timeout=timeout, cwd=cwd)


# Precision.


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_runs_the_gpt_under_bf16_autocast(make_cfg, tmp_path, caplog, precision):
    """bf16-mixed, and 16-mixed (bf16-mixed on a CPU, saying so): the net's outputs are bfloat16 over float32
    weights, and the losses are finite."""
    probe = train_probed(make_cfg(*GPT_TINY, f"precision={precision}"))
    assert probe.precision == "bf16-mixed"
    assert probe.output_dtypes == {torch.bfloat16}  # the attention and MLP matmuls ran under bf16 autocast
    assert float_dtypes(load_last(tmp_path / "run")) == {torch.float32}  # mixed: fp32 master weights
    assert "test/loss" in read_metrics(tmp_path / "run")
    said_so = any("uses precision=bf16-mixed" in message for message in caplog.messages)
    assert said_so == (precision == "16-mixed")


def test_precision_64_true_trains_the_gpt_in_float64(make_cfg, tmp_path):
    probe = train_probed(make_cfg(*GPT_TINY, *NO_TEST, "precision=64-true"))
    assert probe.precision == "64-true"
    assert probe.output_dtypes == {torch.float64}
    assert float_dtypes(load_last(tmp_path / "run")) == {torch.float64}
    read_metrics(tmp_path / "run")


# Accumulation and clipping.


def test_accumulate_grad_batches_steps_the_optimizer_once_every_four_batches(make_cfg, tmp_path):
    probe = train_with_probe(
        make_cfg(*GPT_TINY, *NO_TEST, "accumulate_grad_batches=4", "trainer.limit_train_batches=8"), SwitchProbe
    )
    assert probe.train_batches == 8
    assert probe.global_step == len(probe.at_step) == 2  # the optimizer stepped twice: batches 4 and 8
    assert load_last(tmp_path / "run")["global_step"] == 2


@pytest.mark.parametrize(
    ("overrides", "clip", "algorithm"),
    [
        ((), 1.0, "norm"),  # the experiment's own gradient_clip_val: 1.0
        (("gradient_clip_val=0.5",), 0.5, "norm"),
        (("gradient_clip_val=0.1", "gradient_clip_algorithm=value"), 0.1, "value"),
    ],
    ids=["experiment-norm-1.0", "norm-0.5", "value-0.1"],
)
def test_gradient_clipping_bounds_what_the_optimizer_steps_with(make_cfg, overrides, clip, algorithm):
    """At every optimizer step the gradients the update uses are clipped: their total 2-norm rescaled to `clip`
    (norm), or every element within +-clip (value), down from more: each threshold is below the untrained GPT's."""
    probe = train_probed(make_cfg(*GPT_TINY, *NO_TEST, *overrides))
    assert len(probe.at_step) == len(probe.before_clip) == 4
    column = 0 if algorithm == "norm" else 1  # GradientProbe measures (total norm, largest |element|)
    for unclipped, clipped in zip(probe.before_clip, probe.at_step, strict=True):
        assert unclipped[column] > clip  # there was something to clip ...
        assert clipped[column] <= clip * (1 + 1e-5)  # ... and the update used the clipped gradients
    if algorithm == "norm":
        assert [norm for norm, _ in probe.at_step] == pytest.approx([clip] * 4, rel=1e-3)  # rescaled, not zeroed


# torch.compile, strategy=dp.


def test_model_compile_compiles_the_net_and_saves_plain_keys(make_cfg, tmp_path, caplog, monkeypatch):
    """model.compile=true: the net runs compiled in training (dynamo compiles frames) and the checkpoint's keys are a
    plain GPT's (no `_orig_mod.`), so it loads without compiling. The backend is aot_eager here: dynamo's tracing and
    autograd's graphs as with inductor, without its C++ code generation (tens of seconds cold, torch's own to test)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    compile_module = nn.Module.compile
    aot_eager = lambda self, **kwargs: compile_module(self, backend="aot_eager", **kwargs)  # noqa: E731
    monkeypatch.setattr(nn.Module, "compile", aot_eager)
    torch._dynamo.reset()  # an earlier compile in this process would be reused and count nothing
    counters.clear()
    caplog.set_level(logging.INFO, logger="hydralight")
    try:
        train(make_cfg(*GPT_TINY, *NO_TEST, "model.compile=true", "trainer.limit_val_batches=1"))
        assert counters["frames"]["ok"] >= 1, dict(counters)
    finally:
        torch._dynamo.reset()
    assert any(message.endswith("GPT, compiled (net)") for message in caplog.messages), caplog.messages
    plain = instantiate(make_cfg(*GPT_TINY).model)  # model.compile=false
    plain.load_state_dict(load_last(tmp_path / "run")["state_dict"])  # strict: the very same keys


def test_strategy_dp_wraps_the_net_and_saves_plain_keys(make_cfg, tmp_path):
    """strategy=dp on a CPU (one device): the GPT's `net` trains inside torch.nn.DataParallel, its checkpoint has no
    `module.` keys and loads into a GPT."""
    probe = train_probed(make_cfg(*GPT_TINY, *NO_TEST, "strategy=dp"))
    assert probe.strategy is DataParallelStrategy
    assert probe.net_types == {nn.DataParallel}
    assert probe.global_step == 4
    read_metrics(tmp_path / "run")
    state = load_last(tmp_path / "run")["state_dict"]
    assert state and not [key for key in state if "module." in key]
    GPT.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)


# Resume.


def test_rerunning_in_the_same_run_dir_with_more_epochs_continues_it(make_cfg, tmp_path, caplog):
    """resume=auto: the same run dir with trainer.max_epochs=2 resumes from its last.ckpt and trains only epoch 1
    (a fresh start would train both epochs and end at the same step)."""
    train(make_cfg(*GPT_TINY, *NO_TEST))
    run_dir = tmp_path / "run"
    assert (load_last(run_dir)["epoch"], load_last(run_dir)["global_step"]) == (0, 4)
    caplog.set_level(logging.INFO, logger="hydralight")
    probe = train_probed(make_cfg(*GPT_TINY, *NO_TEST, "trainer.max_epochs=2"))  # the same run dir: tmp_path/run
    assert f"Resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in caplog.messages
    assert (probe.train_batches, probe.global_step) == (4, 8)  # epoch 1's 4 batches, on top of epoch 0's 4 steps
    assert (load_last(run_dir)["epoch"], load_last(run_dir)["global_step"]) == (1, 8)


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


# The command line: a sweep. (DDP on the GPT: tests/test_task_gpt.py, 2 processes == 1 of the doubled batch.)


@pytest.mark.slow
@pytest.mark.sweeps
def test_sweep_ranks_the_gpt_runs_by_val_loss_ascending(tmp_path):
    """`-m experiment=shakespeare_gpt model.optimizer.lr=0.001,0.003`: the experiment's monitor=val/loss mode=min
    makes the summary rank by val/loss_best, lowest first; here the second job (lr 0.003) learns faster, so the
    ranking is not the job order."""
    result = run_in(tmp_path, "-m", *GPT_COMMAND, "model.optimizer.lr=0.001,0.003")
    assert_ok(result)
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert (summary["metric"], summary["direction"]) == ("val/loss_best", "minimize")
    jobs = summary["jobs"]
    values = [job["metrics"]["val/loss_best"] for job in jobs]
    assert [job["status"] for job in jobs] == ["completed"] * 2
    assert values == sorted(values) and values[0] < values[1]
    assert [job["job"] for job in jobs] == [1, 0]
    assert "best first by val/loss_best (minimize)" in result.stdout
    for job in jobs:  # the summary holds each job's own final metrics
        assert read_metrics(Path(job["dir"]))["val/loss_best"] == job["metrics"]["val/loss_best"]
