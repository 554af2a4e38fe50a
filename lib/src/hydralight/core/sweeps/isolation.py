"""Each multirun job runs as if it were a single run: its DDP ranks run only that job, in that job's dir, and the
next job starts from the process state the sweep started with.

Why (Lightning #11300): Lightning starts DDP ranks > 0 by re-running `sys.argv` with `hydra.run.dir=<run dir>`. In a
multirun, `sys.argv` is the whole `-m` sweep and the run dir is not the job's, so every child re-runs every job
into dirs of its own. After one DDP job the process also keeps LOCAL_RANK, WORLD_SIZE, MASTER_PORT and an open
process group, so the next DDP job starts no child and waits for it forever. And Lightning's child observer kills
the main process when a rank dies, which in a sweep would end the whole sweep.

`JobIsolation`, for the duration of each multirun job that may start processes:
- ranks > 0 start as `<the sweep's entry command> <this job's overrides> hydra.mode=RUN hydra.run.dir=<job dir>`;
- a dead rank stops the job's other ranks, not the sweep: the job then fails at its next collective and the sweep
  goes on (if rank 0 stays stuck for `stuck_rank_timeout` seconds, the sweep is ended as Lightning would);
after every multirun job: its ranks are waited for (or stopped, if the job failed), the process group is
destroyed, and the environment and torch's thread count are restored.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hydralight.compat.hydra import get_args_parser  # Hydra's own command-line parser

log = logging.getLogger(__name__)

# Where Lightning's Trainer builds the command for ranks > 0 and starts the observer of those processes.
# Hydra overrides that are about the sweep, not the job: a rank of a job is a plain run of that job.
SWEEP_ONLY_HYDRA_KEYS = (
    "hydra.mode", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher", "hydra/launcher",
    "hydra.run.dir", "hydra.job.name", "hydra.job.num", "hydra.job.id", "hydra.output_subdir",
)  # fmt: skip


def entry_command(argv: list[str] | None = None) -> list[str]:
    """How this process was started, without `-m` and the overrides: `python train.py` or `python -m pkg.module`,
    plus the flags that choose the config (`--config-name`, `--config-path`, `--config-dir`)."""
    import __main__

    argv = sys.argv if argv is None else argv
    spec = getattr(__main__, "__spec__", None)
    command = [sys.executable, os.path.abspath(argv[0])] if spec is None else [sys.executable, "-m", spec.name]
    args, _ = get_args_parser().parse_known_args(argv[1:])
    flags = {"config_path": "--config-path", "config_name": "--config-name", "config_dir": "--config-dir"}
    return command + [f"{flag}={getattr(args, name)}" for name, flag in flags.items() if getattr(args, name, None)]


def _override_key(override: str) -> str:
    return override.lstrip("~+").split("=", 1)[0]


def job_overrides(hydra_cfg: DictConfig) -> list[str]:
    """The overrides that re-create one job of a sweep as a single run: the job's own task overrides (its point of
    the sweep), the user's hydra overrides that are not about sweeping, and `hydra.mode=RUN` (an overlay such as
    hparams_search may set MULTIRUN)."""
    task = [str(override) for override in hydra_cfg.overrides.task]
    own = [str(o) for o in hydra_cfg.overrides.hydra if not _override_key(str(o)).startswith(SWEEP_ONLY_HYDRA_KEYS)]
    return [*task, *own, "hydra.mode=RUN"]


def may_start_processes(config: DictConfig) -> bool:
    """Whether the job's Trainer may re-launch the script for more ranks (more than one device, or nodes)."""
    trainer = config.get("trainer")
    if not OmegaConf.is_dict(trainer):
        return False
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    one_device = devices in (1, "1") or (OmegaConf.is_list(devices) and len(devices) == 1)
    return not one_device or nodes != 1


def stop_processes(processes: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL whatever is still running after `grace` seconds."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RankObserver(threading.Thread):
    """Watches a job's ranks > 0. When one dies, stops the others and lets rank 0 fail the job at its next
    collective; only if rank 0 is still in the job `stuck_timeout` seconds later does it end this process."""

    def __init__(self, children: list[subprocess.Popen], stuck_timeout: float, poll: float = 1.0) -> None:
        super().__init__(daemon=True, name="hydralight-rank-observer")
        self.children = children
        self.stuck_timeout = stuck_timeout
        self.poll_interval = poll
        self.job_ended = threading.Event()

    def run(self) -> None:
        while not self.job_ended.wait(self.poll_interval):
            codes = [child.poll() for child in self.children]
            if all(code == 0 for code in codes):
                return
            dead = [(rank, code) for rank, code in enumerate(codes, start=1) if code]
            if not dead:
                continue
            rank, code = dead[0]
            log.error("Rank %d of this job exited with code %d: stopping the job's other ranks.", rank, code)
            stop_processes(self.children)
            if not self.job_ended.wait(self.stuck_timeout):
                log.error(
                    "Rank 0 is still waiting for rank %d after %.0f s: ending the sweep (a stuck rank cannot be "
                    "interrupted). The jobs finished so far keep their dirs.",
                    rank,
                    self.stuck_timeout,
                )
                os.kill(os.getpid(), signal.SIGKILL)
            return


class JobIsolation(Callback):
    """Hydra callback: makes every multirun job behave like a single run for Lightning (see the module docstring).

    `child_timeout`: seconds to wait after a successful job for its ranks > 0 to exit before stopping them.
    `stuck_rank_timeout`: seconds rank 0 may keep running after another rank died before the sweep is ended.
    """

    def __init__(self, child_timeout: float = 120.0, stuck_rank_timeout: float = 300.0) -> None:
        self.child_timeout = child_timeout
        self.stuck_rank_timeout = stuck_rank_timeout
        self.entry: list[str] | None = None
        self._reset()

    def _reset(self) -> None:
        self._environ: dict[str, str] | None = None
        self._threads: int | None = None
        self._patched: dict[str, Any] = {}
        self._observers: list[RankObserver] = []

    def __getstate__(self) -> dict[str, Any]:
        # Launchers that run jobs in other processes (joblib) pickle the callbacks: only the settings travel.
        return {"child_timeout": self.child_timeout, "stuck_rank_timeout": self.stuck_rank_timeout, "entry": self.entry}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Recorded here, in the process the user started: a joblib worker's own __main__ is joblib's.
        self.entry = entry_command()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return  # a single run: Lightning's own re-launch (sys.argv + hydra.run.dir) is right
        self._environ = dict(os.environ)
        if may_start_processes(config):
            self._patch_launcher(config)
        torch = sys.modules.get("torch")
        self._threads = torch.get_num_threads() if torch is not None else None

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or self._environ is None:
            return
        try:
            self._end_ranks(failed=job_return.status != JobStatus.COMPLETED)
            distributed = sys.modules.get("torch.distributed")
            if distributed is not None and distributed.is_available() and distributed.is_initialized():
                distributed.destroy_process_group()
            torch = sys.modules.get("torch")
            if torch is not None and self._threads is not None:
                torch.set_num_threads(self._threads)
        finally:
            self._unpatch_launcher()
            for key in set(os.environ) - set(self._environ):
                del os.environ[key]
            os.environ.update(self._environ)
            self._reset()

    def _patch_launcher(self, config: DictConfig) -> None:
        from hydralight.compat.lightning import DDP_LAUNCH_FUNCTIONS, DDP_LAUNCHER_MODULE, replace_ddp_launch

        hydra_cfg = config.hydra
        command = [*(self.entry or entry_command()), *job_overrides(hydra_cfg)]
        output_dir, cwd, job_name = hydra_cfg.runtime.output_dir, hydra_cfg.runtime.cwd, hydra_cfg.job.name

        def rank_command(local_rank: int) -> tuple[list[str], str]:
            # Lightning's own suffix (one dir for all ranks; ranks > 0 do not write .hydra/), this job's dir.
            suffix = [f'hydra.run.dir="{output_dir}"', f"hydra.job.name={job_name}_ddp_process_{local_rank}"]
            return [*command, *suffix, "hydra.output_subdir=null"], cwd

        def observe(children: list[subprocess.Popen]) -> None:
            observer = RankObserver(children, stuck_timeout=self.stuck_rank_timeout)
            self._observers.append(observer)
            observer.start()

        self._patched = replace_ddp_launch(rank_command, observe)
        for name in set(DDP_LAUNCH_FUNCTIONS) - set(self._patched):
            log.warning("%s.%s not found: this Lightning version may re-run the whole sweep in DDP ranks.",
                        DDP_LAUNCHER_MODULE, name)  # fmt: skip

    def _unpatch_launcher(self) -> None:
        if not self._patched:
            return
        from hydralight.compat.lightning import restore_ddp_launch

        restore_ddp_launch(self._patched)
        self._patched = {}

    def _end_ranks(self, failed: bool) -> None:
        for observer in self._observers:
            observer.job_ended.set()
            if failed:
                stop_processes(observer.children)
                continue
            for child in observer.children:
                try:
                    child.wait(timeout=self.child_timeout)
                except subprocess.TimeoutExpired:
                    log.warning("A rank of this job (pid %d) still runs %.0f s after the job: stopping it.",
                                child.pid, self.child_timeout)  # fmt: skip
                    stop_processes([child])
