"""strategy=model_parallel (tensor parallel x FSDP2) and strategy=fsdp (FSDP2) on CPU processes (gloo), for any task,
on hydralight.testing's regression of blocks (hydralight.testing.blocks): its tensor-parallel plan equals one
process, FSDP2 equals DDP, a killed sharded run resumes to bitwise the uninterrupted one, tensor parallel x FSDP2 on
two torchrun "nodes" equals one process, the mesh's sizes, clipping across meshes, and clear errors for what cannot
run. (A project's own plan: its tests, e.g. the GPT's.)"""

import uuid
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from omegaconf import open_dict
from test_reliability import assert_identical_training_state

from hydralight.core.errors import UserError
from hydralight.core.evaluate import evaluate
from hydralight.core.gradients import clip_by_norm, total_norm
from hydralight.core.strategies.sharded import mesh_sizes, require_plan
from hydralight.core.train import train
from hydralight.testing import assert_ok, compose, run_cli, write_project
from hydralight.testing.distributed import finish, free_port, torchrun
from hydralight.testing.numerics import assert_close_weights, load_last, read_metrics

# Blocks without dropout, SGD with momentum (a state to shard and restore) in fp32, so equal arithmetic gives equal
# weights. 320 training samples: 20 batches of 16 in pairs (accumulation) make 10 optimizer steps in one process or a
# tensor-parallel pair; 10 batches each on 2 data-parallel processes, 5 steps. The clip value is below the gradient
# norm (every step clips).
COMMON = (
    "model=blocks",
    "data=splits",
    "data.n_samples=960",
    "model.lr=0.5",
    "model.momentum=0.9",
    "precision=32-true",
    "seed=7",
    "accumulate_grad_batches=2",
    "gradient_clip_val=0.1",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "logger=none",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
)
TWO_EPOCHS = (*COMMON, "trainer.max_epochs=2", "test=false")


class FirstWeights(Callback):
    """The module's weights as training starts (in-process runs)."""

    weights: ClassVar[dict[str, torch.Tensor]] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        FirstWeights.weights = {name: t.detach().clone() for name, t in pl_module.state_dict().items()}


@pytest.mark.slow
def test_tensor_parallel_over_two_processes_equals_one_process(project, tmp_path):
    """The blocks' plan (each Linear split by output features, gathered whole) over 2 processes, with batch norm,
    clipping and accumulation: after 5 steps the weights and the losses are one process's, to 1e-5; the checkpoint
    is one consolidated file, whose eval on one process reproduces the test loss."""
    common = (*COMMON, "model.net.batch_norm=true", "trainer.limit_train_batches=10")
    parallel, single = tmp_path / "tp", tmp_path / "single"
    assert_ok(run_cli("train.py", *common, "strategy=model_parallel", "trainer.devices=2",
                      "strategy.tensor_parallel_size=2", f"hydra.run.dir={parallel}", cwd=project))  # fmt: skip
    cfg = compose("train", single, common)
    with open_dict(cfg):
        cfg.callbacks.first_weights = {"_target_": f"{__name__}.FirstWeights"}
    train(cfg)

    assert load_last(parallel)["global_step"] == load_last(single)["global_step"] == 5
    trained = load_last(single)["state_dict"]
    moved = max((trained[name] - FirstWeights.weights[name]).abs().max().item() for name in trained)
    assert moved > 1e-2  # equal weights are not equal initial weights
    assert_close_weights(load_last(parallel)["state_dict"], trained, rtol=1e-5)
    for key in ("train/loss", "val/loss", "test/loss"):
        assert read_metrics(parallel)[key] == pytest.approx(read_metrics(single)[key], rel=1e-5), key
    ckpt = parallel / "checkpoints" / "last.ckpt"
    task = ("data=splits", "data.n_samples=960", "logger=none", "trainer.limit_test_batches=2")
    evaluated = evaluate(compose("eval", tmp_path / "eval", (f"ckpt_path={ckpt}", *task)), overrides=[])
    assert evaluated["test/loss"] == pytest.approx(read_metrics(parallel)["test/loss"], rel=1e-6)


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    """Two epochs of strategy=fsdp over 2 processes, uninterrupted."""
    root = tmp_path_factory.mktemp("fsdp")
    run_dir = root / "run"
    assert_ok(run_cli("train.py", *TWO_EPOCHS, "strategy=fsdp", "trainer.devices=2", f"hydra.run.dir={run_dir}",
                      cwd=write_project(root / "project")))  # fmt: skip
    return run_dir


@pytest.mark.slow
def test_fsdp_over_two_processes_equals_ddp_over_two(fsdp_run, project, tmp_path):
    """Sharded parameters, gradients and optimizer state; the same clipped, accumulated steps as DDP, to 1e-6."""
    ddp = tmp_path / "ddp"
    assert_ok(run_cli("train.py", *TWO_EPOCHS, "strategy=ddp", "trainer.devices=2", f"hydra.run.dir={ddp}",
                      cwd=project))  # fmt: skip
    assert load_last(fsdp_run)["global_step"] == load_last(ddp)["global_step"] == 10
    assert_close_weights(load_last(fsdp_run)["state_dict"], load_last(ddp)["state_dict"], rtol=1e-6)
    assert read_metrics(fsdp_run)["train/loss"] == pytest.approx(read_metrics(ddp)["train/loss"], rel=1e-6)


@pytest.mark.slow
def test_fsdp_run_killed_then_the_same_command_ends_bitwise_equal(fsdp_run, project, tmp_path):
    """kill -9 of both processes in the second epoch, after the first epoch's checkpoint; the same command resumes
    the sharded run from its consolidated checkpoint (weights and sharded optimizer state) to exactly the
    uninterrupted run's weights and state."""
    resumed = tmp_path / "resumed"
    command = (*TWO_EPOCHS, "strategy=fsdp", "trainer.devices=2", f"hydra.run.dir={resumed}",
               "+callbacks.kill._target_=hydralight.testing.faults.KillAt", "+callbacks.kill.at_step=7")  # fmt: skip
    killed = run_cli("train.py", *command, cwd=project)
    assert killed.returncode != 0
    assert load_last(resumed)["global_step"] == 5
    assert load_last(resumed)["optimizer_states"][0]["state"]  # momentum: a state to restore

    result = run_cli("train.py", *command, cwd=project)
    assert_ok(result)
    assert "Resuming from" in result.stdout + result.stderr
    assert_identical_training_state(fsdp_run / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_two_by_two_on_two_torchrun_nodes_equals_one_process_of_the_doubled_batch(project, tmp_path):
    """Two torchrun "nodes" of 2 processes on loopback, both sizes auto: tensor parallel within a node, FSDP2 across
    the nodes. It trains, and equals one process on the doubled batch to 1e-5."""
    rdzv_id, port = f"job-{uuid.uuid4().hex[:8]}", free_port()
    args = (*COMMON, "strategy=model_parallel", "trainer.num_nodes=2", "trainer.devices=2", "test=false",
            f"paths.log_dir={tmp_path / 'outputs'}")  # fmt: skip
    finish([torchrun(rank, 2, 2, port, rdzv_id, project, "train.py", *args) for rank in (0, 1)])
    grid = tmp_path / "outputs" / "train" / "runs" / f"torchrun-{rdzv_id}"
    single = tmp_path / "single"
    train(compose("train", single, (*COMMON, "data.batch_size=32", "test=false")))
    assert load_last(grid)["global_step"] == load_last(single)["global_step"] == 5
    assert_close_weights(load_last(grid)["state_dict"], load_last(single)["state_dict"], rtol=1e-5)


# What cannot run: one clear line before any process starts, or where the module is built.


@pytest.mark.parametrize(
    ("data_parallel", "tensor_parallel", "world", "expected"),
    [("auto", "auto", 4, (1, 4)), ("auto", 2, 4, (2, 2)), (2, "auto", 4, (2, 2)), (1, 1, 1, (1, 1))],
)
def test_mesh_sizes_fill_the_world(data_parallel, tensor_parallel, world, expected):
    assert mesh_sizes(data_parallel, tensor_parallel, world, num_nodes=1) == expected


def test_mesh_that_does_not_match_the_processes_is_one_clear_error(make_cfg):
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
def test_fsdp_with_cpu_offload_trains_on_a_gpu(project, tmp_path):
    """strategy.cpu_offload=true keeps the sharded state in CPU memory between uses (GPU runs only)."""
    run_dir = tmp_path / "run"
    result = run_cli("train.py", "model=blocks", "strategy=fsdp", "strategy.cpu_offload=true",
                     "trainer.accelerator=gpu", "trainer.devices=1", "trainer.max_epochs=1", "data.batch_size=8",
                     "test=false", "logger=none", f"hydra.run.dir={run_dir}", cwd=project)  # fmt: skip
    assert_ok(result)
    assert "CPU offload" in result.stdout + result.stderr
    assert load_last(run_dir)["global_step"] == 4
