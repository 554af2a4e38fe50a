"""Parallel jobs that share one machine (`hydra/launcher=joblib hydra.launcher.n_jobs=J`): each worker process takes
one of J slots for its life, and every job it runs gets that slot's share of the machine: its own GPUs
(`CUDA_VISIBLE_DEVICES`, never a GPU of another slot) and cores // J torch threads.

joblib's loky workers already cap their threads at cores // J (OMP_NUM_THREADS); what they lack is GPUs: without a
slot every job puts its model on GPU 0. The slot also states the thread share in the job's log and passes it to the
ranks a DDP job starts. A slot is a lock file held by the worker (in the temp dir, one folder per sweep dir, so the
sweep dir holds only job dirs): a worker that dies releases it, and the next worker takes it.
"""

import fcntl
import hashlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from hydralight.core.errors import UserError

log = logging.getLogger(__name__)
# This worker's slot: (the sweep dir it belongs to, its number, the open lock file that holds it).
_held: tuple[str, int, Any] | None = None


def parallel_jobs(config: DictConfig) -> int:
    """How many jobs the launcher runs at once: joblib's n_jobs (-1: one per core); 1 for launchers without it."""
    n_jobs = config.hydra.launcher.get("n_jobs") if "launcher" in config.hydra else None
    if n_jobs is None:
        return 1
    n_jobs = int(n_jobs)
    return cpu_count() if n_jobs == -1 else max(n_jobs, 1)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES as the user set it, else every GPU torch sees (counted
    without initializing CUDA, so the slot's own CUDA_VISIBLE_DEVICES still applies)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [device.strip() for device in given.split(",") if device.strip()]
    import torch  # the job imports it next anyway

    return [str(index) for index in range(torch.cuda.device_count())]


def slot_gpus(slot: int, jobs: int, gpus: list[str]) -> list[str]:
    """Slot `slot` of `jobs`: its own len(gpus) // jobs GPUs, none shared with another slot."""
    if not gpus:
        return []
    if len(gpus) < jobs:
        raise UserError(
            f"hydra.launcher.n_jobs={jobs} runs {jobs} jobs at once on {len(gpus)} GPU(s) ({','.join(gpus)}): two "
            f"jobs would share a GPU. Use hydra.launcher.n_jobs <= {len(gpus)}."
        )
    share = len(gpus) // jobs
    return gpus[slot * share : (slot + 1) * share]


def slots_dir(sweep_dir: str) -> Path:
    """Where the slot locks of `sweep_dir` live: on this machine, outside the sweep dir."""
    key = hashlib.sha256(os.path.abspath(sweep_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"hydralight-slots-{key}"


def take_slot(sweep_dir: str, jobs: int, wait_s: float = 120.0) -> int:
    """The slot this worker holds in `sweep_dir`, taking a free one (0..jobs-1) the first time."""
    global _held
    if _held is not None and _held[0] == sweep_dir:
        return _held[1]
    folder = slots_dir(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for slot in range(jobs):
            file = open(folder / f"{slot}.lock", "w")  # noqa: SIM115 - held open: the lock lives as long as the worker
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                file.close()
                continue
            _held = (sweep_dir, slot, file)
            return slot
        if time.monotonic() > deadline:  # a worker of a finished job that has not exited yet holds it
            raise RuntimeError(f"no free slot of {jobs} in {folder} after {wait_s:.0f} s")
        time.sleep(0.2)


class MachineShare(Callback):
    """Hydra callback: in a multirun whose launcher runs several jobs at once, gives each job its slot's GPUs and
    threads (see the module docstring). Set before the job builds anything; JobIsolation restores the environment
    and the thread count after the job."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = parallel_jobs(config) if config.hydra.mode == RunMode.MULTIRUN else 1
        if jobs == 1:
            return
        slot = take_slot(str(config.hydra.sweep.dir), jobs)
        gpus = slot_gpus(slot, jobs, visible_gpus())
        threads = max(1, cpu_count() // jobs)
        if gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # for the ranks a DDP job starts
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads)
        log.info("Machine share: slot %d of %d parallel jobs, %d torch thread(s), GPUs: %s",
                 slot, jobs, threads, ",".join(gpus) or "none")  # fmt: skip
