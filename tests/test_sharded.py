"""strategy=model_parallel (tensor parallel x FSDP2) and strategy=fsdp (FSDP2) on CPU processes (gloo): the same
training as one process or DDP, checkpoints like any other, resume after kill -9, clear errors for what cannot run."""

import json
import os
import signal
import uuid
from pathlib import Path

import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from torch import Tensor

from hydralight.core.errors import UserError
from hydralight.core.evaluate import evaluate
from hydralight.core.gradients import clip_by_norm, total_norm
from hydralight.core.strategies.sharded import mesh_sizes, require_plan
from hydralight.core.train import train
from tests.conftest import assert_ok, compose_config, run_cli
from tests.test_distributed import finish, free_port, torchrun
from tests.test_numerics import EXACT, STEPS
from tests.test_reliability import assert_identical_training_state, start_training, wait_for

# The GPT of one block (2 heads, so one per tensor-parallel process) over 16 characters, 8 windows a batch; plain SGD
# in fp32 without dropout, so equal arithmetic gives equal weights. 20 batches in pairs (accumulation) make 10
# optimizer steps in one process or a tensor-parallel pair; 10 batches each on 2 data-parallel processes, 5 steps.
# The clip value is below the gradient norm: every step clips.
COMMON = (
    "experiment=shakespeare_gpt",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "data.block_size=16",
    "data.batch_size=8",
    "data.samples_per_epoch=160",
    "model/optimizer=sgd",
    "~model.optimizer.betas",  # the experiment's, for AdamW
    "model.optimizer.momentum=0",
    "model.optimizer.nesterov=false",
    "precision=32-true",
    "accumulate_grad_batches=2",
    "gradient_clip_val=0.05",
    "logger=none",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "~callbacks.progress_bar",
    "trainer.enable_progress_bar=false",
)
TWO_EPOCHS = (*COMMON, "trainer.max_epochs=2", "test=false")


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
def test_tensor_parallel_over_two_processes_equals_one_process(tmp_path):
    """strategy=model_parallel strategy.tensor_parallel_size=2 (the transformer's Megatron plan; both processes see
    every batch): after 10 clipped, accumulated steps its weights and its losses are one process's, to 1e-5."""
    parallel, single = tmp_path / "tp", tmp_path / "single"
    result = run_cli("train.py", *COMMON, "strategy=model_parallel", "trainer.devices=2",
                     "strategy.tensor_parallel_size=2", f"hydra.run.dir={parallel}")  # fmt: skip
    assert_ok(result)
    train(compose_config("train", single, COMMON))

    assert last(parallel)["global_step"] == last(single)["global_step"] == 10
    assert_close(last(parallel)["state_dict"], last(single)["state_dict"], rtol=1e-5)
    for key in ("train/loss", "val/loss", "test/loss"):
        assert metrics(parallel)[key] == pytest.approx(metrics(single)[key], rel=1e-5), key
    # The checkpoint is one consolidated file: eval rebuilds the module on one process and reproduces the test loss.
    ckpt = parallel / "checkpoints" / "last.ckpt"
    eval_cfg = compose_config("eval", tmp_path / "eval", (f"ckpt_path={ckpt}", "trainer.limit_test_batches=2"))
    evaluated = evaluate(eval_cfg, overrides=[])
    assert evaluated["test/loss"] == pytest.approx(metrics(parallel)["test/loss"], rel=1e-6)


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


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    """Two epochs of strategy=fsdp over 2 processes, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("fsdp") / "run"
    assert_ok(run_cli("train.py", *TWO_EPOCHS, "strategy=fsdp", "trainer.devices=2", f"hydra.run.dir={run_dir}"))
    return run_dir


@pytest.mark.slow
def test_fsdp_over_two_processes_equals_ddp_over_two(fsdp_run, tmp_path):
    """Sharded parameters, gradients and optimizer state; the same clipped, accumulated steps as DDP, to 1e-6."""
    ddp = tmp_path / "ddp"
    assert_ok(run_cli("train.py", *TWO_EPOCHS, "strategy=ddp", "trainer.devices=2", f"hydra.run.dir={ddp}"))
    assert last(fsdp_run)["global_step"] == last(ddp)["global_step"] == 10
    assert_close(last(fsdp_run)["state_dict"], last(ddp)["state_dict"], rtol=1e-6)
    assert metrics(fsdp_run)["train/loss"] == pytest.approx(metrics(ddp)["train/loss"], rel=1e-6)


@pytest.mark.slow
def test_fsdp_run_killed_then_the_same_command_ends_bitwise_equal(fsdp_run, tmp_path):
    """kill -9 after the first epoch's checkpoint; the same command resumes the sharded run from its consolidated
    checkpoint (weights and sharded optimizer state) to exactly the uninterrupted run's weights and state."""
    resumed = tmp_path / "resumed"
    command = (*TWO_EPOCHS, "strategy=fsdp", "trainer.devices=2")
    process = start_training(resumed, *command)
    wait_for(resumed / "checkpoints" / "last.ckpt", process, timeout=240)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert last(resumed)["global_step"] < 10

    result = run_cli("train.py", *command, f"hydra.run.dir={resumed}")
    assert_ok(result)
    assert "Resuming from" in result.stdout + result.stderr
    assert_identical_training_state(fsdp_run / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_two_by_two_on_two_torchrun_nodes_equals_one_process_of_the_doubled_batch(tmp_path):
    """Two torchrun "nodes" of 2 processes on loopback, both sizes auto: tensor parallel within a node, FSDP2 across
    the nodes. It trains, and equals one process on the doubled batch to 1e-5."""
    rdzv_id, port = f"job-{uuid.uuid4().hex[:8]}", free_port()
    args = (*COMMON, "strategy=model_parallel", "trainer.num_nodes=2", "trainer.devices=2", "test=false",
            f"paths.log_dir={tmp_path / 'outputs'}")  # fmt: skip
    finish([torchrun(rank, 2, 2, port, rdzv_id, tmp_path, *args) for rank in (0, 1)])
    grid = tmp_path / "outputs" / "train" / "runs" / f"torchrun-{rdzv_id}"
    single = tmp_path / "single"
    train(compose_config("train", single, (*COMMON, "data.batch_size=16", "test=false")))
    assert last(grid)["global_step"] == last(single)["global_step"] == 5
    assert_close(last(grid)["state_dict"], last(single)["state_dict"], rtol=1e-5)


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
