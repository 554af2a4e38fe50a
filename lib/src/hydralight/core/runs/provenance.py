"""The records of what ran, beside `.hydra/`: the saved config stating what ran, and the run's provenance.

`.hydra/config.yaml` states what ran: values settled only once the run started (the precision Lightning really uses,
the learning rate tune=lr_find chose) replace the ones asked for (`record_what_ran`); `overrides.yaml` keeps what was
typed. The provenance: what was installed (`packages.txt`), on which machine, software and GPUs, from which command,
commit and branch (`environment.json`), with which uncommitted changes (`git.diff`). One folder per start,
`provenance/<start time>/`, so a resumed run keeps what its first start was made of."""

import json
import logging
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from hydralight.core import files
from hydralight.core.runs.guard import is_first_process

log = logging.getLogger(__name__)
_PLAIN_INTERPOLATION = re.compile(r"\$\{([\w.]+)\}")
_ABSENT = object()

# The package whose checkout says which code ran, wherever the command was started.
CODE_DIR = Path(__file__).resolve().parents[2]
# All git calls together, in seconds: a git that hangs (a stale lock on a network filesystem) delays a start, never
# stops it.
GIT_TIMEOUT_S = 10.0
NVIDIA_SMI_TIMEOUT_S = 10.0
UNTRACKED_LISTED = 1000  # a data folder nobody ignored can hold millions
# Versions environment.json names; the rest are in packages.txt.
KEY_PACKAGES = ("lightning", "hydra-core", "omegaconf", "torchmetrics")


def write_provenance(run_dir: str | Path, code_dir: str | Path = CODE_DIR) -> Path | None:
    """Write `<run_dir>/provenance/<start time>/` (rank 0 only) and return it; a record that cannot be written is a
    warning, not a failed run."""
    if not is_first_process():
        return None
    started = datetime.now().astimezone()
    try:
        folder = _new_folder(Path(run_dir) / "provenance", started.strftime("%Y-%m-%d_%H-%M-%S"))
        (folder / "packages.txt").write_text("".join(f"{line}\n" for line in installed_packages()))
        record = {**environment(started), "git": git_record(Path(code_dir), folder / "git.diff")}
        (folder / "environment.json").write_text(json.dumps(record, indent=2) + "\n")
    except OSError as error:
        log.warning("The run's provenance could not be written into %s: %s", run_dir, error)
        return None
    log.info("Provenance: %s", folder)
    return folder


def _new_folder(parent: Path, name: str) -> Path:
    """`parent/name`, or `name_1`, `name_2`, ... for starts within the same second: never an earlier start's."""
    parent.mkdir(parents=True, exist_ok=True)
    candidate, n = parent / name, 0
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = parent / f"{name}_{n}"


def installed_packages() -> list[str]:
    """`name==version` for every installed distribution, as `pip freeze` lists them, editable installs marked."""
    lines: dict[str, str] = {}
    for dist in metadata.distributions():  # in sys.path order: the first of a name is the one `import` finds
        # Only the header: `dist.metadata` parses each long description too, several times slower over a whole venv.
        header = (dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "").partition("\n\n")[0]
        fields = dict(re.findall(r"^(Name|Version):[ \t]*(.*?)\s*$", header, re.MULTILINE))
        name = fields.get("Name")
        key = re.sub(r"[-_.]+", "-", name or "").lower()
        if not name or key in lines:
            continue
        line = f"{name}=={fields.get('Version', '')}"
        location = _editable_location(dist)
        lines[key] = f"{line}  # editable install of {location}" if location else line
    return [lines[key] for key in sorted(lines)]


def _editable_location(dist: metadata.Distribution) -> str | None:
    """The source dir of a `pip install -e` (PEP 610's direct_url.json), else None."""
    try:
        direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return None
    if not isinstance(direct_url, dict) or not direct_url.get("dir_info", {}).get("editable"):
        return None
    return unquote(urlparse(direct_url.get("url", "")).path) or None


def environment(started: datetime) -> dict[str, Any]:
    """The machine, the interpreter, torch's build and the GPUs, the key versions, and the command as typed."""
    import torch  # already loaded by the task that calls this

    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "started": started.isoformat(timespec="seconds"),
        "command": shlex.join(sys.orig_argv),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,  # the CUDA torch was built with; None for a CPU build
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        **gpu_record(torch),
        **versions,
    }


def gpu_record(torch: Any) -> dict[str, Any]:
    """The GPUs nvidia-smi lists and their driver, when torch sees a GPU; a missing nvidia-smi is only noted."""
    # device_count() asks NVML, unlike is_available(): CUDA stays uninitialised, so a forking strategy still works.
    count = torch.cuda.device_count()
    record: dict[str, Any] = {
        "gpu_count": count,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus": [],
        "gpu_driver": None,
    }
    if count == 0:
        return record
    query = ["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        listed = subprocess.run(
            query, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=NVIDIA_SMI_TIMEOUT_S, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        return {**record, "gpus": None, "nvidia_smi_error": str(error)}
    rows = [[cell.strip() for cell in line.split(",")] for line in listed.splitlines() if line.strip()]
    record["gpus"] = [{"index": row[0], "name": row[1], "memory": row[2]} for row in rows if len(row) == 4]
    record["gpu_driver"] = next((row[3] for row in rows if len(row) == 4), None)
    return record


def git_record(code_dir: Path, diff_path: Path) -> dict[str, Any]:
    """Commit, branch, dirty flag and untracked files of the checkout that tracks `code_dir`, and the diff of its
    tracked files against HEAD into `diff_path` (`git apply` on a clone at that commit gives the tree that ran).
    Outside a checkout, without git, or when git fails or is too slow: what is known, and why the rest is not."""
    deadline = time.monotonic() + GIT_TIMEOUT_S
    # A run reads the repository and never writes to it: no index refresh (GIT_OPTIONAL_LOCKS), no password prompt.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}

    def git(*args: str, cwd: Path, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=max(deadline - time.monotonic(), 0.01),
        )

    def output(result: subprocess.CompletedProcess) -> str | None:
        return result.stdout.decode(errors="replace").strip() if result.returncode == 0 else None

    record: dict[str, Any] = {"checkout": False, "code_dir": str(code_dir)}
    try:
        toplevel = git("rev-parse", "--show-toplevel", cwd=code_dir)
        if toplevel.returncode != 0:
            message = toplevel.stderr.decode(errors="replace").strip().splitlines()
            return {**record, "reason": message[-1] if message else "not a git checkout"}
        top = Path(output(toplevel) or code_dir)
        # The code must be tracked there: a venv or a wheel inside some unrelated checkout says nothing of this code.
        if git("ls-files", "--error-unmatch", "--", ".", cwd=code_dir, stdout=subprocess.DEVNULL).returncode != 0:
            return {**record, "toplevel": str(top), "reason": f"{code_dir} is not tracked by the git checkout {top}"}
        record.update(checkout=True, toplevel=str(top))
        record["commit"] = output(git("rev-parse", "--verify", "-q", "HEAD", cwd=top))  # None before the first commit
        record["branch"] = output(git("symbolic-ref", "-q", "--short", "HEAD", cwd=top))  # None when detached
        if record["commit"] is not None:
            with diff_path.open("wb") as diff:
                # --no-ext-diff/--no-textconv: the patch git apply takes back, whatever diff drivers the user set up
                diff_args = ("diff", "HEAD", "--binary", "--no-ext-diff", "--no-textconv", "--no-color")
                failed = git(*diff_args, cwd=top, stdout=diff).returncode != 0
            if failed:
                diff_path.unlink()
                record["error"] = "git diff HEAD failed"
            else:
                record["dirty"] = diff_path.stat().st_size > 0
        untracked = output(git("ls-files", "--others", "--exclude-standard", "-z", cwd=top))
        if untracked is not None:
            names = [name for name in untracked.split("\0") if name]
            record["untracked_count"] = len(names)
            record["untracked"] = names[:UNTRACKED_LISTED]
    except subprocess.TimeoutExpired as timeout:
        diff_path.unlink(missing_ok=True)  # a diff cut short would not be the tree that ran
        record["error"] = f"git took more than {GIT_TIMEOUT_S:g} s in all (at: {shlex.join(timeout.cmd)}); skipped"
    except OSError as error:
        if isinstance(error, FileNotFoundError) and error.filename == "git":
            record["reason"] = "git is not installed"
        else:  # code_dir gone, a git that cannot be executed, git.diff not writable
            record["error"] = f"git could not be run: {error}"
    return record


def saved_config_path(output_dir: str | Path) -> Path | None:
    """Where Hydra saved this run's config (`<run dir>/<hydra.output_subdir>/config.yaml`); None if it saves none."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        if hydra.output_subdir is None:  # hydra.output_subdir=null, as for Lightning's DDP ranks > 0
            return None
        return Path(hydra.runtime.output_dir) / hydra.output_subdir / "config.yaml"
    return Path(output_dir) / ".hydra" / "config.yaml"  # outside Hydra's runtime (tests): where Hydra would put it


def _chain(config: DictConfig, key: str) -> list[str]:
    """`key`, then each key it is a plain interpolation of: `trainer.precision: ${precision}` is set through
    `precision`, the last of the chain."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(config, parent_key) if parent_key else config
    if isinstance(parent, DictConfig) and leaf in parent and OmegaConf.is_interpolation(parent, leaf):
        raw = OmegaConf.to_container(parent, resolve=False)[leaf]  # as written: `${precision}`, unresolved
        match = _PLAIN_INTERPOLATION.fullmatch(str(raw))
        if match:
            return [key, *_chain(config, match.group(1))]
    return [key]


def _references(node: Any, target: str) -> list[str]:
    """The keys under `node` (a plain container) whose raw value is exactly `${target}` or
    `${oc.select:target,<default>}`."""
    reference = re.compile(rf"\$\{{(?:oc\.select:)?{re.escape(target)}(?:,[^}}]*)?\}}")

    def found(node: Any, key: str) -> list[str]:
        if isinstance(node, dict | list):
            items = node.items() if isinstance(node, dict) else enumerate(node)
            return [ref for name, value in items for ref in found(value, f"{key}.{name}".lstrip("."))]
        return [key] if isinstance(node, str) and reference.fullmatch(node) else []

    return found(node, "")


def record_what_ran(output_dir: str | Path, values: dict[str, Any], cfg: DictConfig | None = None) -> None:
    """Set each dotted key of `values` to what the run really uses, in the saved config (rank 0) and in `cfg` (what
    the loggers receive); everything else is kept."""
    if cfg is not None:
        _update(cfg, values)
    _rewrite_saved_config(output_dir, values)


def _update(config: DictConfig, values: dict[str, Any]) -> bool:
    """Set the keys `config` has to `values`, and only those: another key that interpolates one of them keeps its
    value (the batch-size finder's `init_val: ${data.batch_size}` was where it started). Whether anything changed."""
    changed = False
    for key, value in values.items():
        chain = _chain(config, key)
        owner = chain[-1]
        current = OmegaConf.select(config, owner, default=_ABSENT, throw_on_resolution_failure=False)
        if current is _ABSENT or current == value:
            continue
        raw = OmegaConf.to_container(config, resolve=False)
        for reference in _references(raw, owner):
            if reference not in chain:
                OmegaConf.update(config, reference, current, merge=False)
        OmegaConf.update(config, owner, value, merge=False)
        changed = True
    return changed


@rank_zero_only
def _rewrite_saved_config(output_dir: str | Path, values: dict[str, Any]) -> None:
    """Atomically (temp file + rename), and only if a value differs: a reader never sees half a file."""
    path = saved_config_path(output_dir)
    if path is None or not path.is_file():
        return
    saved = OmegaConf.load(path)
    if not _update(saved, values):
        return
    files.write_text(path, OmegaConf.to_yaml(saved))  # what Hydra itself writes (hydra.core.utils._save_config)


def git_state(directory: str | Path) -> dict[str, Any]:
    """The commit checked out in `directory` and whether tracked files differ from it; None for both outside git."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=True)
        return result.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, no commit yet
        return {"commit": None, "dirty": None}
