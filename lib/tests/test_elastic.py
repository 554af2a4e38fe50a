"""Elastic restarts (issue 26): under `torchrun --max-restarts=N` with a stable run dir (`run_name=`) and step
checkpoints, a worker killed mid-epoch makes torchrun's agent restart the whole group; the restarted run resumes from
the newest step checkpoint (resume=auto) and ends with weights bitwise equal to a run that was never killed."""

import uuid

import pytest
import torch

from hydralight.testing.distributed import finish, free_port, torchrun

# 2 processes of DDP on the CPU over loopback, the stateful task (dropout, Adam, shuffled loaders: 10 steps an epoch
# per process), a step checkpoint every 3 steps; the killed run dies at step 14, mid-epoch, after the one at step 12.
COMMON = (
    "model=stateful", "data=stateful", "strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
    "trainer.max_epochs=2", "callbacks.last_checkpoint.every_n_train_steps=3", "test=false", "logger=none",
    "~callbacks.progress_bar", "trainer.enable_progress_bar=false", "~callbacks.model_summary",
    "trainer.enable_model_summary=false",
)  # fmt: skip
KILL = ("+callbacks.fault._target_=hydralight.testing.faults.KillAt", "+callbacks.fault.at_step=14")


# Restarts hang without it (torch #135712: see the last test). Given to torchrun alone: set in this process, it would
# also reach the warm test interpreter if that started now, and every later command would then differ from it.
ELASTIC_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def run(project, name: str, *extra: str, max_restarts: int = 0) -> str:
    weights = project / "weights" / name
    args = (*COMMON, f"run_name={name}", "+callbacks.dump._target_=hydralight.testing.distributed.DumpWeights",
            f"+callbacks.dump.folder={weights}", *extra)  # fmt: skip
    node = torchrun(0, 1, 2, free_port(), uuid.uuid4().hex, project, "train.py", *args, max_restarts=max_restarts,
                    env=ELASTIC_ENV)  # fmt: skip
    return finish([node])[0]


@pytest.mark.slow
def test_a_killed_worker_restarts_the_group_which_resumes_bitwise(project):
    run(project, "whole")
    log = run(project, "killed", *KILL, max_restarts=1)
    assert "restart" in log.lower() or "Restarting" in log, log[-3000:]
    checkpoints = project / "outputs" / "train" / "runs" / "killed" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    whole = torch.load(project / "weights" / "whole" / "rank0.pt")
    resumed = torch.load(project / "weights" / "killed" / "rank0.pt")
    assert whole.keys() == resumed.keys()
    for name, tensor in whole.items():
        assert torch.equal(tensor, resumed[name]), name


def test_restarts_with_a_shared_rendezvous_store_are_refused_saying_how_to_start_torchrun(monkeypatch):
    """torchrun --max-restarts=N with its default shared store: a restart would hang (torch #135712), so the run is
    refused before training with the variable that makes restarts work."""
    from hydralight.core.errors import UserError
    from hydralight.core.train import check_elastic_restarts

    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    with pytest.raises(UserError, match="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        check_elastic_restarts()
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # what that variable makes torchrun set
    check_elastic_restarts()
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")  # no restart: the shared store is fine
    check_elastic_restarts()
