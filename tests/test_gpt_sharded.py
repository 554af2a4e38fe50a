"""strategy=model_parallel and strategy=fsdp on the GPT, on CPU processes (gloo): tensor parallel (its Megatron plan)
equals one process, FSDP2 equals DDP, a kill -9 resumes to bitwise the uninterrupted run, 2 x 2 on two torchrun
"nodes", and the memory benchmark."""

import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from hydralight.core.evaluate import evaluate
from hydralight.core.train import train
from tests.conftest import assert_ok, compose_config, run_cli
from tests.test_distributed import finish, free_port, torchrun
from tests.test_gpt_switches import GPT_TINY
from tests.test_reliability import assert_identical_training_state, start_training, wait_for
from tests.test_sharded import assert_close, last, metrics

# GPT_TINY: one block of 2 heads (one per tensor-parallel process) over 16 characters, 8 windows a batch. Plain SGD
# in fp32 without dropout, so equal arithmetic gives equal weights. 20 batches in pairs (accumulation) make 10
# optimizer steps in one process or a tensor-parallel pair; 10 batches each on 2 data-parallel processes, 5 steps.
# The clip value is below the gradient norm (every step clips) and each step moves the weights far (lr 1): the
# losses fall.
COMMON = (
    *GPT_TINY,
    "data.samples_per_epoch=160",
    "model/optimizer=sgd",
    "~model.optimizer.betas",  # the experiment's, for AdamW
    "model.optimizer.momentum=0",
    "model.optimizer.nesterov=false",
    "model.optimizer.lr=1.0",
    "model/scheduler=none",  # a constant rate: the weights move from the first step (a warm-up would barely move them)
    "precision=32-true",
    "accumulate_grad_batches=2",
    "gradient_clip_val=0.5",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "~callbacks.progress_bar",
    "trainer.enable_progress_bar=false",
)
TWO_EPOCHS = (*COMMON, "trainer.max_epochs=2", "test=false")


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
    assert metrics(single)["val/loss"] < 3.9  # it learned (4.18 at the start): equal weights are not equal inits
    assert_close(last(parallel)["state_dict"], last(single)["state_dict"], rtol=1e-5)
    for key in ("train/loss", "val/loss", "test/loss"):
        assert metrics(parallel)[key] == pytest.approx(metrics(single)[key], rel=1e-5), key
    # The checkpoint is one consolidated file: eval rebuilds the module on one process and reproduces the test loss.
    ckpt = parallel / "checkpoints" / "last.ckpt"
    eval_cfg = compose_config("eval", tmp_path / "eval", (f"ckpt_path={ckpt}", "trainer.limit_test_batches=2"))
    evaluated = evaluate(eval_cfg, overrides=[])
    assert evaluated["test/loss"] == pytest.approx(metrics(parallel)["test/loss"], rel=1e-6)


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
