"""Run dirs: finding the checkpoint to resume from, and refusing dirs a run must not write into."""

import errno
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from hydralight.config import RESUME_MODES
from hydralight.errors import UserError, choices_message

log = logging.getLogger(__name__)


def newest_checkpoint(run_dir: str | Path, checkpoint_dir: str | Path) -> Path | None:
    """The loadable checkpoint with the most optimizer steps (newest file on a tie), from `checkpoint_dir` and the
    ones Lightning's SLURM auto-requeue writes into the run dir (hpc_ckpt_N.ckpt); unreadable ones are skipped."""
    from hydralight.checkpoints import read_checkpoint  # torch: only where a checkpoint is really read

    candidates = []
    for path in [*Path(checkpoint_dir).glob("*.ckpt"), *Path(run_dir).glob("hpc_ckpt_*.ckpt")]:
        try:
            checkpoint = read_checkpoint(path)
        except UserError as error:
            log.warning("Skipping %s: %s", path, error)
            continue
        candidates.append((checkpoint.get("global_step", 0), path.stat().st_mtime, path))
    return max(candidates)[2] if candidates else None


def _previous_task(run_dir: Path) -> str | None:
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        return None
    return OmegaConf.load(config).get("task_name")


def check_run_dir(run_dir: Path, task_name: str, resume: str) -> None:
    """Raise UserError unless `run_dir` is new, empty, or an earlier run of the same task that may be continued."""
    if run_dir.name == "torchrun-none":
        raise UserError(
            "torchrun without a rendezvous id: the nodes cannot agree on a run dir. Pass --rdzv-id=<job id> (or "
            "--standalone on one node), or the same run_name=<name> or hydra.run.dir=<shared dir> on every node."
        )
    if resume not in RESUME_MODES:
        raise UserError(choices_message("resume", resume, RESUME_MODES))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(run_dir, os.W_OK):
            raise PermissionError(errno.EACCES, "read-only")
    except OSError as error:
        raise UserError(
            f"hydra.run.dir={str(run_dir)!r} cannot be written ({error.strerror or error}). "
            "Choose a writable dir, e.g. hydra.run.dir=outputs/my-run"
        ) from error
    # Hydra's own `.hydra/` and log files may already be there: other ranks of a torchrun or SLURM job run the
    # Hydra app at the same time, in the same dir.
    if not any(path.name != ".hydra" and path.suffix != ".log" for path in run_dir.iterdir()):
        return
    previous = _previous_task(run_dir)
    if previous != task_name:
        raise UserError(
            f"hydra.run.dir={str(run_dir)!r} already holds files that are not a {task_name} run of this project "
            f"({'a ' + previous + ' run' if previous else 'no .hydra/config.yaml'}); nothing there is touched. "
            "Choose a new or empty dir."
        )
    if resume == "never" and any((run_dir / "checkpoints").glob("*.ckpt")):
        raise UserError(
            f"hydra.run.dir={str(run_dir)!r} already holds checkpoints and resume=never. Use resume=auto to "
            "continue that run, or a new dir."
        )


class RunDirGuard(HydraCallback):
    """Checks the run dir before Hydra writes anything into it (`on_run_start` comes before `.hydra/`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if int(os.environ.get("LOCAL_RANK", 0)) != 0 or int(os.environ.get("RANK", 0)) != 0:
            return  # DDP ranks > 0 join the dir rank 0 already checked and filled
        try:
            check_run_dir(Path(config.hydra.run.dir), config.task_name, config.get("resume", "auto"))
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(UserError.exit_code)
