"""Run dirs: finding the checkpoint to resume from, refusing dirs a run must not write into, one run per dir at a
time, and leaving a dir as it was when a run is refused before it trains."""

import atexit
import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from hydralight.core.errors import UserError, choices_message
from hydralight.core.files import process_alive
from hydralight.core.resolvers import created_dirs
from hydralight.core.validation import RESUME_MODES

log = logging.getLogger(__name__)
LOCK_FILE = ".hydralight.lock"


def _previous_task(run_dir: Path) -> str | None:
    """The task of the earlier run in `run_dir`. Every rank of a torchrun or SLURM job runs the Hydra app, and each
    rewrites `.hydra/config.yaml` in place (truncate, then write): a read that finds it empty or half-written is
    tried again for a while before the dir counts as holding no run."""
    config = run_dir / ".hydra" / "config.yaml"
    for _ in range(40):
        if not config.is_file():
            return None
        with contextlib.suppress(Exception):  # a half-written file does not parse
            task = OmegaConf.load(config).get("task_name")
            if task is not None:
                return task
        time.sleep(0.05)
    return None


def _is_run_record(path: Path) -> bool:
    """What any process of a run writes before the task: Hydra's `.hydra/`, log files, the run lock."""
    return path.name in (".hydra", LOCK_FILE) or path.suffix == ".log"


def check_run_dir(run_dir: Path, task_name: str, resume: str, label: str | None = None) -> None:
    """Raise UserError unless `run_dir` is new, empty, or an earlier run of the same task that may be continued.
    `label` is how the user named the dir (`run_name='x'`), for the message."""
    label = label or f"hydra.run.dir={str(run_dir)!r}"
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
            f"{label} cannot be written ({error.strerror or error}). "
            "Choose a writable dir, e.g. hydra.run.dir=outputs/my-run"
        ) from error
    # Hydra's own `.hydra/` and log files may already be there: other ranks of a torchrun or SLURM job run the
    # Hydra app at the same time, in the same dir.
    if all(_is_run_record(path) for path in run_dir.iterdir()):
        return
    previous = _previous_task(run_dir)
    if previous != task_name:
        raise UserError(
            f"{label} ({run_dir}) already holds files that are not a {task_name} run of this project "
            f"({'a ' + previous + ' run' if previous else 'no .hydra/config.yaml'}); nothing there is touched. "
            "Choose a new or empty dir."
        )
    if resume == "never" and any((run_dir / "checkpoints").glob("*.ckpt")):
        raise UserError(
            f"{label} ({run_dir}) already holds checkpoints and resume=never. Use resume=auto to continue that "
            "run, or a new dir."
        )


def is_first_process() -> bool:
    """Rank 0 of a distributed job (Lightning's DDP ranks, torchrun, srun), or a plain single process."""
    ranks = (os.environ.get(name, "0") for name in ("LOCAL_RANK", "RANK", "SLURM_PROCID"))
    return all(rank == "0" for rank in ranks)


def _lock_owner() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0"),
    }


def _owner_is_gone(owner: dict[str, Any]) -> bool:
    """Whether the process that wrote a lock has ended (a kill -9 leaves its lock behind)."""
    mine = _lock_owner()
    if owner.get("slurm_job") and owner.get("slurm_job") == mine["slurm_job"]:
        return owner.get("slurm_restart") != mine["slurm_restart"]  # the same job, requeued: the old one is gone
    if owner.get("host") != mine["host"]:
        return False  # another machine's process: cannot tell, so it counts as alive
    try:
        return not process_alive(int(owner.get("pid", 0)))
    except (ValueError, OverflowError):
        return False


class RunLock:
    """`<run dir>/.hydralight.lock`: one run at a time in a dir. Released at exit; a dead owner's lock is taken."""

    def __init__(self, run_dir: Path, label: str, instead: str = "choose another run_name") -> None:
        self.path = run_dir / LOCK_FILE
        self.label = label
        self.instead = instead  # what the refusal suggests

    def acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._read_owner()
                if not _owner_is_gone(owner):
                    raise UserError(
                        f"{self.label} is in use by another run (pid {owner.get('pid')} on {owner.get('host')}, "
                        f"see {self.path}). Wait for it to end or {self.instead}; if no run uses that "
                        "dir any more, delete the lock file."
                    ) from None
                log.warning("Taking over the lock of an ended run (pid %s): %s", owner.get("pid"), self.path)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as file:
                json.dump(_lock_owner(), file)
            atexit.register(self.release)
            return

    def _read_owner(self) -> dict[str, Any]:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # being written right now, or unreadable: treat as held
        return owner if isinstance(owner, dict) else {}

    def release(self) -> None:
        if self._read_owner().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)


class RunRecord:
    """What a run dir held before this run, so a run refused before training leaves it as it was: Hydra writes
    `.hydra/` and the log before the task can refuse anything."""

    def __init__(self, run_dir: Path, lock: RunLock) -> None:
        """Made before the dir is checked, created or locked."""
        self.run_dir = run_dir
        self.lock = lock
        self.new = run_dir.resolve() in created_dirs or not run_dir.is_dir() or not any(run_dir.iterdir())
        hydra_dir = run_dir / ".hydra"
        self.files = {path: path.read_bytes() for path in hydra_dir.glob("*") if path.is_file()}
        self.log_sizes = {path: path.stat().st_size for path in run_dir.glob("*.log")}

    def undo(self) -> None:
        """Put back what was there: a new dir is removed, an earlier run's records are restored byte for byte."""
        self.lock.release()
        if self.new:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        hydra_dir = self.run_dir / ".hydra"
        for path in hydra_dir.glob("*"):
            if path.is_file() and path not in self.files:
                path.unlink()
        for path, content in self.files.items():
            path.write_bytes(content)
        for path in self.run_dir.glob("*.log"):
            if path in self.log_sizes:
                os.truncate(path, self.log_sizes[path])
            else:
                path.unlink()


_pending: RunRecord | None = None


def training_started() -> None:
    """From now on the run dir holds this run's work: a later error keeps it."""
    global _pending
    _pending = None


def undo_refused_run() -> None:
    """A run refused before training: leave its run dir as it was before the command (no-op otherwise)."""
    global _pending
    if _pending is not None:
        _pending.undo()
        _pending = None


def _remove_if_empty(directory: Path) -> None:
    """A sweep dir this process made, at exit: gone again if the sweep wrote nothing into it (refused, or stopped)."""
    with contextlib.suppress(OSError):
        directory.rmdir()


def _resolved_dir(config: DictConfig, key: str) -> Path:
    """`hydra.run.dir` or `hydra.sweep.dir`, created here by its resolver; a dir that cannot be made is the user's
    to fix."""
    try:
        return Path(OmegaConf.select(config, key, throw_on_missing=True))
    except InterpolationResolutionError as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, OSError):  # OmegaConf wraps the resolver's error twice
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise UserError(
            f"paths.log_dir={config.paths.log_dir!r}: the {key.split('.')[1]} dir cannot be created there "
            f"({cause.strerror or cause}: {cause.filename}). Start in a writable dir, or set "
            f"paths.log_dir=<writable dir> or {key}=<writable dir>."
        ) from error


def check_run_name(run_name: object, log_dir: Path) -> None:
    """`run_name` names one dir under `outputs/<task>/runs/`: no separator, no `.` or `..`, no absolute path, and no
    longer than the filesystem takes (a name, not a path: `hydra.run.dir=<dir>` is for a dir elsewhere)."""
    if run_name is None:
        return
    name, limit = str(run_name), _name_max(log_dir)
    if not name:
        problem = "is empty"
    elif name in (".", "..") or any(sep and sep in name for sep in ("/", os.sep, os.altsep)):
        problem = "is a path, not a name"
    elif len(name.encode()) > limit:
        problem = f"is {len(name.encode())} bytes long; this filesystem takes names of at most {limit}"
    else:
        return
    shown = name if len(name) <= 80 else name[:77] + "..."
    raise UserError(
        f"run_name={shown!r} {problem}. It names one dir under outputs/<task>/runs/: give a plain name "
        "(letters, digits, -, _), or hydra.run.dir=<dir> for a run dir anywhere else."
    )


def _name_max(directory: Path) -> int:
    """The longest file name the filesystem of `directory` (or its nearest existing parent) takes, in bytes."""
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            try:
                return os.pathconf(candidate, "PC_NAME_MAX")
            except (OSError, ValueError, AttributeError):  # no pathconf here (Windows), or no answer
                break
    return 255


class RunDirGuard(HydraCallback):
    """Checks and locks the run dir before Hydra writes anything into it (`on_run_start` comes before `.hydra/`),
    and remembers what it held, so a refused run leaves it as it was."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep dir is locked like a run dir: two sweeps into one would write their jobs into the same dirs."""
        try:
            sweep_dir = _resolved_dir(config, "hydra.sweep.dir")
            label = f"hydra.sweep.dir={str(sweep_dir)!r}"
            if not sweep_dir.exists() or sweep_dir.resolve() in created_dirs:  # this command's own (the lock's home)
                sweep_dir.mkdir(parents=True, exist_ok=True)
                atexit.register(_remove_if_empty, sweep_dir)  # before the lock's release, so it runs after it
            RunLock(sweep_dir, label, instead="give this sweep another hydra.sweep.dir").acquire()
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(UserError.exit_code)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _pending
        if not is_first_process():
            return  # other ranks join the dir rank 0 checked, locked and filled
        record = None
        try:
            run_name = config.get("run_name")
            check_run_name(run_name, Path(OmegaConf.select(config, "paths.log_dir", default=None) or "."))
            run_dir = _resolved_dir(config, "hydra.run.dir")
            label = f"run_name={run_name!r}" if run_name else f"hydra.run.dir={str(run_dir)!r}"
            record = RunRecord(run_dir, RunLock(run_dir, label))
            check_run_dir(run_dir, config.task_name, config.get("resume", "auto"), label)
            record.lock.acquire()
        except UserError as error:
            if record is not None and record.new:
                record.undo()  # a dir this command made for the run (`hydra.run.dir`'s resolver) goes again
            print(f"error: {error}", file=sys.stderr)
            sys.exit(UserError.exit_code)
        _pending = record
