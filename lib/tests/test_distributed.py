"""Beyond one process: torchrun across two loopback "nodes", DDP evaluation that matches one process, and the checks
that keep launcher and config in agreement, on hydralight.testing's regression."""

import json
import re
import uuid
from pathlib import Path

import pytest
import torch
from test_reliability import QUIET

from hydralight.core.errors import UserError
from hydralight.core.resolvers import job_run_name, run_dir
from hydralight.core.runs.guard import check_run_dir
from hydralight.testing import assert_ok, run_cli
from hydralight.testing.distributed import finish, free_port, torchrun

TINY = ("trainer.max_epochs=1", *QUIET)


def assert_one_run(outputs: Path, name: str) -> Path:
    runs = list((outputs / "train" / "runs").iterdir())
    assert [run.name for run in runs] == [name]
    assert [path.parent for path in outputs.rglob("metrics.json")] == runs
    return runs[0]


@pytest.mark.slow
def test_two_torchrun_nodes_on_loopback_share_one_run_dir_and_end_with_equal_weights(project, tmp_path):
    """torchrun --nnodes=2 (two local "nodes", gloo on 127.0.0.1): one run dir named after the rendezvous id, one
    metrics.json, and both ranks end with identical weights."""
    rdzv_id, port = f"job-{uuid.uuid4().hex[:8]}", free_port()
    args = (
        "strategy=ddp", "trainer.num_nodes=2", "trainer.devices=1", *TINY, f"paths.log_dir={tmp_path / 'outputs'}",
        "+callbacks.dump._target_=hydralight.testing.distributed.DumpWeights",
        f"+callbacks.dump.folder={tmp_path / 'w'}",
    )  # fmt: skip
    logs = finish([torchrun(rank, 2, 1, port, rdzv_id, project, "train.py", *args) for rank in (0, 1)])
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
def test_ddp_eval_on_two_processes_reports_the_single_process_loss(make_cfg, project, tmp_path):
    """Test loss of one checkpoint: 2 DDP processes (unpadded shards of the library's datamodule, metrics summed
    over the processes) == 1 process. 33 test samples: a padded shard would count one twice."""
    from hydralight.core.evaluate import evaluate
    from hydralight.core.train import train

    task = ("model=blocks", "data=splits", "data.n_samples=99", "logger=none")
    train(make_cfg(*task, "test=false"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    one = evaluate(make_cfg(*task, f"ckpt_path={ckpt}", config_name="eval"), overrides=[])
    run = tmp_path / "eval2"
    assert_ok(run_cli("eval.py", *task, f"ckpt_path={ckpt}", "strategy=ddp", "trainer.devices=2", *QUIET[1:],
                      f"hydra.run.dir={run}", cwd=project))  # fmt: skip
    two = json.loads((run / "metrics.json").read_text())
    assert two["test/loss"] == pytest.approx(one["test/loss"], rel=1e-6, abs=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA sync_batchnorm is valid")
def test_sync_batchnorm_without_gpu_is_a_clear_error(make_cfg):
    """trainer.sync_batchnorm=true on a CPU-only machine: a UserError before any process starts."""
    from hydralight.core.train import train

    with pytest.raises(UserError, match="sync_batchnorm=true needs CUDA"):
        train(make_cfg("strategy=ddp", "trainer.sync_batchnorm=true"))


@pytest.mark.gpu
def test_ddp_with_sync_batchnorm_on_gpus(project, tmp_path):
    """strategy=ddp trainer.devices=2 trainer.sync_batchnorm=true trains a net with batch norm on two GPUs (needs
    >= 2)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    run = tmp_path / "run"
    assert_ok(run_cli("train.py", "model=blocks", "model.net.batch_norm=true", "strategy=ddp", "trainer.devices=2",
                      "trainer.sync_batchnorm=true", "trainer.accelerator=gpu", *TINY, f"hydra.run.dir={run}",
                      cwd=project))  # fmt: skip
    assert "test/loss" in json.loads((run / "metrics.json").read_text())


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
