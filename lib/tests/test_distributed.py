"""Beyond one process: torchrun across two loopback "nodes" and on one node, SLURM's path through submitit's local
executor, DDP evaluation that matches one process, and the checks that keep launcher and config in agreement."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import torch
from lightning.pytorch import Callback

from hydralight.core.errors import UserError
from hydralight.core.resolvers import job_run_name, run_dir
from hydralight.core.runs.guard import check_run_dir
from hydralight.testing import warm
from hydralight.testing.contract import LOOPBACK, free_port  # shared with the contract's DDP check
from tests.conftest import ROOT, assert_ok, run_cli

TINY = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=6",
    "logger=none",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
)


class DumpWeights(Callback):
    """Test helper: every rank writes its final weights to `<folder>/rank<R>.pt`."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.state_dict(), self.folder / f"rank{trainer.global_rank}.pt")


@dataclass
class Node:
    """A torchrun agent (one "node") and the file its output and its workers' go to."""

    process: warm.WarmChild | subprocess.Popen
    output: IO[str]

    def read(self) -> str:
        self.output.seek(0)
        return self.output.read()


def torchrun(node_rank: int, nnodes: int, nproc: int, port: int, rdzv_id: str, cwd: Path, *args: str) -> Node:
    """`python -m torch.distributed.run ... train.py <args>`: torchrun's agent for one node, and its workers, warm
    (hydralight.testing.warm) where they can be."""
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc_per_node={nproc}",
        f"--node_rank={node_rank}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id={rdzv_id}",
        str(ROOT / "train.py"), *args,
    ]  # fmt: skip
    output = tempfile.TemporaryFile("w+")  # noqa: SIM115 (read and closed by finish)
    return Node(warm.popen(command, cwd, {**os.environ, **LOOPBACK}, output, output), output)


def finish(nodes: list[Node], timeout: float = 240) -> list[str]:
    """Wait for every node; on a time-out stop them all and fail with their output. Each node's output."""
    try:
        deadline = time.monotonic() + timeout
        for node in nodes:
            node.process.wait(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        for node in nodes:
            node.process.terminate()  # the agent stops its workers, which live in sessions of their own
        for node in nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):  # gone already
                os.killpg(node.process.pid, signal.SIGKILL)
        pytest.fail("torchrun did not finish in time:\n" + "\n".join(node.read()[-3000:] for node in nodes))
    outputs = [node.read() for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        node.output.close()
        assert node.process.returncode == 0, output[-6000:]
    return outputs


def assert_one_run(outputs: Path, name: str) -> Path:
    runs = list((outputs / "train" / "runs").iterdir())
    assert [run.name for run in runs] == [name]
    assert [path.parent for path in outputs.rglob("metrics.json")] == runs
    return runs[0]


@pytest.mark.slow
def test_two_torchrun_nodes_on_loopback_share_one_run_dir_and_end_with_equal_weights(tmp_path):
    """torchrun --nnodes=2 (two local "nodes", gloo on 127.0.0.1): one run dir named after the rendezvous id, one
    metrics.json, and both ranks end with identical weights."""
    rdzv_id, port = f"job-{uuid.uuid4().hex[:8]}", free_port()
    args = (
        "strategy=ddp", "trainer.num_nodes=2", "trainer.devices=1", *TINY, f"paths.log_dir={tmp_path / 'outputs'}",
        "+callbacks.dump._target_=tests.test_distributed.DumpWeights", f"+callbacks.dump.folder={tmp_path / 'w'}",
    )  # fmt: skip
    nodes = [torchrun(rank, 2, 1, port, rdzv_id, tmp_path, *args) for rank in (0, 1)]
    logs = finish(nodes)
    run = assert_one_run(tmp_path / "outputs", f"torchrun-{rdzv_id}")
    assert "[rank 1]" in logs[1]  # log lines say which rank wrote them
    rank0, rank1 = (torch.load(tmp_path / "w" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(last[key], rank0[key]) for key in rank0)


def test_world_size_mismatch_is_a_clear_error(make_cfg, monkeypatch):
    """The launcher (torchrun, srun) started 2 processes but the config says 1: one clear line naming both."""
    from hydralight.core.train import train

    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun and srun set in each process they start
    with pytest.raises(UserError, match=re.escape("trainer.num_nodes=1 x trainer.devices=1 = 1 processes, but the")):
        train(make_cfg("strategy=ddp", "trainer.devices=1"))


@pytest.mark.slow
def test_ddp_eval_on_two_processes_reports_the_single_process_accuracy(make_cfg, tmp_path):
    """Test accuracy of one checkpoint: 2 DDP processes (unpadded shards, synced metrics) == 1 process, exactly."""
    from hydralight.core.evaluate import evaluate
    from hydralight.core.train import train

    train(make_cfg(*TINY, "test=false", tiny=False))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    one = evaluate(make_cfg(f"ckpt_path={ckpt}", *TINY[2:], config_name="eval", tiny=False), overrides=[])
    run = tmp_path / "eval2"
    assert_ok(run_cli("eval.py", f"ckpt_path={ckpt}", "strategy=ddp", "trainer.devices=2", *TINY[2:],
                      f"hydra.run.dir={run}"))  # fmt: skip
    two = json.loads((run / "metrics.json").read_text())
    assert two["test/acc"] == one["test/acc"]
    assert two["test/loss"] == pytest.approx(one["test/loss"], abs=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA sync_batchnorm is valid")
def test_sync_batchnorm_without_gpu_is_a_clear_error(make_cfg):
    """trainer.sync_batchnorm=true on a CPU-only machine: a UserError before any process starts."""
    from hydralight.core.train import train

    with pytest.raises(UserError, match="sync_batchnorm=true needs CUDA"):
        train(make_cfg("strategy=ddp", "trainer.sync_batchnorm=true"))


@pytest.mark.gpu
def test_ddp_with_sync_batchnorm_on_gpus(tmp_path):
    """strategy=ddp trainer.devices=2 trainer.sync_batchnorm=true trains on two GPUs (needs >= 2)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    run = tmp_path / "run"
    assert_ok(run_cli("train.py", "strategy=ddp", "trainer.devices=2", "trainer.sync_batchnorm=true",
                      "trainer.accelerator=gpu", *TINY, f"hydra.run.dir={run}"))  # fmt: skip
    assert "test/acc" in json.loads((run / "metrics.json").read_text())


def test_distributed_jobs_agree_on_a_run_dir_without_a_shared_clock(monkeypatch, tmp_path):
    """Inside torchrun the run dir comes from the rendezvous id, inside a SLURM job from the job id (so a requeued
    job finds its checkpoints); an explicit run_name wins; outside both, each run gets a new dir."""
    for key in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    assert job_run_name() is None
    assert run_dir(str(tmp_path)) != run_dir(str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert run_dir(str(tmp_path)) == str(tmp_path / "slurm-4242")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    assert run_dir(str(tmp_path)) == str(tmp_path / "torchrun-abc")
    assert run_dir(str(tmp_path), "mine") == str(tmp_path / "mine")


def test_torchrun_without_rendezvous_id_is_refused(tmp_path):
    """torchrun with no --rdzv-id cannot agree on a run dir: a clear error says what to pass."""
    with pytest.raises(UserError, match="--rdzv-id"):
        check_run_dir(tmp_path / "torchrun-none", "train", "auto")


def test_activation_checkpointing_gives_the_same_gradients():
    """model.net.activation_checkpointing=true recomputes activations in backward: same loss, same gradients."""
    from my_project.models.nets.cnn import ResNetCNN

    torch.manual_seed(0)
    plain = ResNetCNN((1, 8, 8), 10, channels=(8, 16), dropout=0.0)
    checkpointed = ResNetCNN((1, 8, 8), 10, channels=(8, 16), dropout=0.0, activation_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(16, 1, 8, 8)
    for net in (plain, checkpointed):
        net(x).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
