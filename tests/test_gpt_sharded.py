"""strategy=model_parallel on the GPT, on CPU processes (gloo): its own tensor-parallel plan (Megatron's) over 2
processes equals one process. (The strategies themselves, FSDP2, its resume and the 2-D mesh on torchrun "nodes":
lib/tests/test_sharded.py; benchmarks/sharding.py: tests/template/test_benchmark_sharding.py.)"""

import pytest

from hydralight.core.evaluate import evaluate
from hydralight.core.train import train
from hydralight.testing.numerics import assert_close_weights, load_last, read_metrics
from tests.conftest import assert_ok, compose_config, run_cli
from tests.test_gpt_switches import GPT_TINY

# GPT_TINY: one block of 2 heads (one per tensor-parallel process) over 16 characters, 8 windows a batch. Plain SGD
# in fp32 without dropout, so equal arithmetic gives equal weights. 20 batches in pairs (accumulation) make 10
# optimizer steps. The clip value is below the gradient norm (every step clips) and each step moves the weights far
# (lr 1): the losses fall.
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


@pytest.mark.slow
def test_tensor_parallel_over_two_processes_equals_one_process(tmp_path):
    """strategy=model_parallel strategy.tensor_parallel_size=2 (the transformer's Megatron plan; both processes see
    every batch): after 10 clipped, accumulated steps its weights and its losses are one process's, to 1e-5."""
    parallel, single = tmp_path / "tp", tmp_path / "single"
    result = run_cli("train.py", *COMMON, "strategy=model_parallel", "trainer.devices=2",
                     "strategy.tensor_parallel_size=2", f"hydra.run.dir={parallel}")  # fmt: skip
    assert_ok(result)
    train(compose_config("train", single, COMMON))

    assert load_last(parallel)["global_step"] == load_last(single)["global_step"] == 10
    assert read_metrics(single)["val/loss"] < 3.9  # it learned (4.18 at the start): equal weights are not equal inits
    assert_close_weights(load_last(parallel)["state_dict"], load_last(single)["state_dict"], rtol=1e-5)
    for key in ("train/loss", "val/loss", "test/loss"):
        assert read_metrics(parallel)[key] == pytest.approx(read_metrics(single)[key], rel=1e-5), key
    # The checkpoint is one consolidated file: eval rebuilds the module on one process and reproduces the test loss.
    ckpt = parallel / "checkpoints" / "last.ckpt"
    eval_cfg = compose_config("eval", tmp_path / "eval", (f"ckpt_path={ckpt}", "trainer.limit_test_batches=2"))
    evaluated = evaluate(eval_cfg, overrides=[])
    assert evaluated["test/loss"] == pytest.approx(read_metrics(parallel)["test/loss"], rel=1e-6)
