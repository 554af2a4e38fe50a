"""strategy=model_parallel (tensor parallel x FSDP2) and strategy=fsdp (FSDP2) on CPU processes (gloo), for any task:
the classifier's tensor-parallel plan equals one process, the mesh's sizes, clipping across meshes, and clear errors
for what cannot run."""

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from torch import Tensor

from hydralight.core.errors import UserError
from hydralight.core.gradients import clip_by_norm, total_norm
from hydralight.core.strategies.sharded import mesh_sizes, require_plan
from hydralight.core.train import train
from tests.conftest import assert_ok, compose_config, run_cli
from tests.test_numerics import EXACT, STEPS


def last(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")


def metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def assert_close(left: dict[str, Tensor], right: dict[str, Tensor], rtol: float) -> None:
    assert left.keys() == right.keys()
    for name, value in left.items():
        scale = right[name].abs().max().clamp_min(1e-12)
        assert float((value - right[name]).abs().max() / scale) <= rtol, name


@pytest.mark.slow
def test_tensor_parallel_classifier_equals_one_process(tmp_path):
    """The MLP's plan (every Linear split by output features, gathered whole): with batch norm, clipping and
    accumulation, tensor parallel over 2 processes ends with one process's weights, to 1e-5."""
    common = (*EXACT, "model.net.batch_norm=true", "accumulate_grad_batches=2", "gradient_clip_val=0.1", "test=false",
              "trainer.accelerator=cpu", "trainer.max_epochs=1", f"trainer.limit_train_batches={2 * STEPS}",
              "logger=none", "~callbacks.progress_bar", "trainer.enable_progress_bar=false")  # fmt: skip
    parallel, single = tmp_path / "tp", tmp_path / "single"
    assert_ok(run_cli("train.py", *common, "strategy=model_parallel", "trainer.devices=2", f"hydra.run.dir={parallel}"))
    train(compose_config("train", single, common))
    assert last(parallel)["global_step"] == last(single)["global_step"] == STEPS
    assert_close(last(parallel)["state_dict"], last(single)["state_dict"], rtol=1e-5)


# What cannot run: one clear line before any process starts, or where the module is built.


@pytest.mark.parametrize(
    ("data_parallel", "tensor_parallel", "world", "expected"),
    [("auto", "auto", 4, (1, 4)), ("auto", 2, 4, (2, 2)), (2, "auto", 4, (2, 2)), (1, 1, 1, (1, 1))],
)
def test_mesh_sizes_fill_the_world(data_parallel, tensor_parallel, world, expected):
    assert mesh_sizes(data_parallel, tensor_parallel, world, num_nodes=1) == expected


def test_mesh_that_does_not_match_the_processes_is_one_clear_error(make_cfg, tmp_path):
    cfg = make_cfg("strategy=model_parallel", "trainer.devices=2", "strategy.tensor_parallel_size=3")
    with pytest.raises(UserError, match=r"strategy.tensor_parallel_size=3 must be .* = 2"):
        train(cfg)


def test_a_module_without_a_tensor_parallel_plan_is_told_what_to_implement():
    """BoringModel has no configure_model: with tensor_parallel_size > 1 the strategy names what to write."""
    with pytest.raises(UserError, match=r"BoringModel applies no tensor-parallel plan. Implement its configure_model"):
        require_plan(BoringModel(), tensor_parallel_size=2)
    require_plan(BoringModel(), tensor_parallel_size=1)  # nothing to split: FSDP alone needs no plan


def test_clip_by_norm_is_torchs_clip_on_plain_tensors():
    """On plain tensors the mesh-aware clip is torch.nn.utils.clip_grad_norm_."""
    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    theirs.load_state_dict(ours.state_dict())
    inputs = torch.randn(16, 8)
    for module in (ours, theirs):
        module(inputs).square().sum().backward()
    expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.1)
    assert float(clip_by_norm(ours.parameters(), 0.1)) == pytest.approx(float(expected))
    for mine, torchs in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, torchs.grad)
    assert float(total_norm([p.grad for p in ours.parameters()])) == pytest.approx(0.1, rel=1e-4)


@pytest.mark.gpu
def test_fsdp_with_cpu_offload_trains_on_a_gpu(tmp_path):
    """strategy.cpu_offload=true keeps the sharded state in CPU memory between uses (GPU runs only)."""
    run_dir = tmp_path / "run"
    result = run_cli("train.py", "strategy=fsdp", "strategy.cpu_offload=true", "trainer.accelerator=gpu",
                     "trainer.devices=1", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "test=false",
                     "logger=none", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert_ok(result)
    assert "CPU offload" in result.stdout + result.stderr
    assert last(run_dir)["global_step"] == 4
