"""Several processes in a test: torchrun's agents as local "nodes" on the loopback interface (warm where they can be,
hydralight.testing.warm), and a callback through which every rank shows its final weights."""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from hydralight.testing import warm
from hydralight.testing.contract import LOOPBACK, free_port

__all__ = ["LOOPBACK", "DumpWeights", "Node", "finish", "free_port", "torchrun"]


class DumpWeights(Callback):
    """Every rank writes its final weights to `<folder>/rank<R>.pt` (`+callbacks.dump._target_=` this class)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
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


def torchrun(
    node_rank: int,
    nnodes: int,
    nproc: int,
    port: int,
    rdzv_id: str,
    cwd: str | Path,
    script: str,
    *args: str,
    max_restarts: int = 0,
    env: dict[str, str] | None = None,
) -> Node:
    """`python -m torch.distributed.run ... <script> <args>` in `cwd`: torchrun's agent for one node of `nnodes`, with
    `nproc` workers, meeting the others at 127.0.0.1:`port` under `rdzv_id`, restarting its group up to
    `max_restarts` times when a worker dies, with `env` on top of this process's environment. Wait for it with
    `finish`."""
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc_per_node={nproc}",
        f"--node_rank={node_rank}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id={rdzv_id}",
        f"--max-restarts={max_restarts}", script, *args,
    ]  # fmt: skip
    output = tempfile.TemporaryFile("w+")  # noqa: SIM115 (read and closed by finish)
    return Node(warm.popen(command, cwd, {**os.environ, **LOOPBACK, **(env or {})}, output, output), output)


def finish(nodes: list[Node], timeout: float = 240) -> list[str]:
    """Wait for every node; on a time-out stop them all and fail with their output. Each node's output; a node that
    failed fails the test with its output."""
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
