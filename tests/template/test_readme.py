"""README.md as a test: every command it shows runs as typed, with default run and sweep dirs, and does what it says.

The commands are read from README.md: each line of its ```bash blocks, and each inline `python ...`, `torchrun ...`,
`make ...` (PROGRAMS) in its tables and text. ENTRIES says, for each, how it runs here (the command itself, its
placeholders filled, with only what shortens it appended) or, for the few that cannot run here, why. A README command
with no entry fails, so a new one cannot go untested. `python X.py ...` runs as `<this python> <repo>/X.py ...` with
its cwd a fresh scratch dir ("from another directory"); the quickstart also runs in a copy of the working tree ("from
the repo root"). No command gets `hydra.run.dir=` or `hydra.sweep.dir=`: no README line types them.
"""

import csv
import gzip
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from hydralight.core.runs.guard import LOCK_FILE
from hydralight.testing import warm
from tests.conftest import ROOT, working_tree_files

README = ROOT / "README.md"
# An inline code span is a command when its first word is one of these, or a `hydralight-*` console script.
PROGRAMS = {
    "python", "python3", "torchrun", "srun", "sbatch", "make", "pip", "uv", "pytest", "copier", "git", "cd", "bash",
}  # fmt: skip
SHELL_FENCES = {"bash", "sh", "shell", "console"}
DIGITS = ROOT / "src" / "my_project" / "data" / "digits.csv.gz"
TRAIN_METRICS = {"val/acc_best", "test/acc", "test/loss"}
# What shortens a run and changes nothing else it does: one epoch of a few batches.
LIMITS = ("trainer.limit_train_batches=4", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")
SHORT = ("trainer.max_epochs=1", *LIMITS)
SECOND_RANK = "GLOBAL_RANK: 1, MEMBER: 2/2"  # Lightning's line when the second of 2 processes joins
LOOPBACK = {"GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
TIMEOUT = 300


# What README.md shows.


def strip_comment(line: str) -> str:
    """A shell line without its trailing `# comment` (a `#` inside quotes or a word stays)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


def is_command(span: str) -> bool:
    first = span.split()[0] if span.split() else ""
    return first in PROGRAMS or first.startswith("hydralight-")


def readme_commands(text: str) -> list[str]:
    """Every command `text` shows, in order; a repeated one gets ` [2]`, ` [3]`, ... so each has its own entry."""
    found: list[str] = []
    paragraph: list[str] = []
    fence: str | None = None

    def end_paragraph() -> None:  # a code span never crosses a blank line or a code block
        spans = re.findall(r"`([^`]+)`", "\n".join(paragraph))
        found.extend(" ".join(span.split()) for span in spans if is_command(span))
        paragraph.clear()

    for line in text.splitlines():
        opening = re.match(r"\s*```\s*(\S*)", line)
        if opening:
            end_paragraph()
            fence = None if fence is not None else opening.group(1)
        elif fence is None:
            if line.strip():
                paragraph.append(line)
            else:
                end_paragraph()
        elif fence in SHELL_FENCES and strip_comment(line):
            found.append(strip_comment(line))
    end_paragraph()
    seen: Counter[str] = Counter()
    keys = []
    for command in found:
        seen[command] += 1
        keys.append(command if seen[command] == 1 else f"{command} [{seen[command]}]")
    return keys


def typed(key: str) -> str:
    """The command as README.md types it (its key without the ` [2]` of a repeat)."""
    return re.sub(r" \[\d+\]$", "", key)


# How each one runs here.


@dataclass
class Ran:
    """One README command as it ran: its argv, cwd, exit code, output, time, and the dirs it found there."""

    argv: list[str]
    cwd: Path
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    before: set[Path]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def new(self, pattern: str) -> list[Path]:
        """The dirs matching `pattern` under the cwd that this command made."""
        return sorted(path for path in self.cwd.glob(pattern) if path.is_dir() and path not in self.before)

    def run_dir(self, task: str = "train") -> Path:
        runs = self.new(f"outputs/{task}/runs/*")
        assert len(runs) == 1, f"expected one new run dir in {self.cwd}/outputs/{task}/runs, found {runs}"
        return runs[0]

    def sweep_dir(self) -> Path:
        sweeps = self.new("outputs/train/multiruns/*")
        assert len(sweeps) == 1, f"expected one new sweep dir in {self.cwd}/outputs/train/multiruns, found {sweeps}"
        assert not self.new("outputs/train/runs/*"), "a sweep claimed a run dir outside its sweep dir"
        return sweeps[0]

    def line(self) -> str:
        return f"exit {self.returncode} in {self.seconds:.1f} s: {shlex.join(self.argv)}  (cwd {self.cwd})"


@dataclass(frozen=True)
class Run:
    """A README command run here: its placeholders filled, `extra` (only what shortens it) appended, then checked."""

    check: Callable[[Ran], None]
    extra: tuple[str, ...] = SHORT
    fill: dict[str, str] = field(default_factory=dict)  # placeholder -> value; `{name}` is Runner.value(name)
    where: str = "scratch"  # a new empty dir; "repo": a copy of the working tree; or an earlier command: its dir
    needs: tuple[str, ...] = ()  # modules of an optional extra: the test skips without them
    exit_code: int = 0
    interrupt_when: str | None = None  # SIGTERM once this file (relative to the cwd) exists: a run "killed" midway
    prepare: Callable[[Path], None] | None = None  # makes the files the command reads, in its cwd
    repeat: int = 1  # runs of the command in one dir (a sweep that a storage continues)
    instead: str | None = None  # for a command that cannot run here, the one run in its place (why: in `why`)
    against: str | None = None  # another README command whose run `check(ran, that_run)` compares this one with
    why: str = ""


@dataclass(frozen=True)
class NotRun:
    """A README command that cannot run here, and why."""

    why: str


@dataclass(frozen=True)
class Covered:
    """A README command another test module runs already, at a cost this module should not pay twice."""

    test: str  # tests/<module>.py::<test function>
    why: str


@dataclass(frozen=True)
class Same:
    """A README command named again (in a sentence, without its arguments): tested as the line it repeats."""

    command: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def digit_rows() -> list[list[int]]:
    """The embedded UCI digits: 64 raw pixel values (0..16), then the label, per row."""
    with gzip.open(DIGITS, "rt") as file:
        return [[int(value) for value in row] for row in csv.reader(file) if row]


def write_digits_csv(cwd: Path, rows: int = 200) -> None:
    """digits.csv as a user holding UCI digits has it: raw 0..16 pixel rows, no label, no header."""
    with open(cwd / "digits.csv", "w", newline="") as file:
        csv.writer(file).writerows(row[:64] for row in digit_rows()[:rows])


class Runner:
    """Runs each README command once per test session; a later command can use an earlier one's dir or files."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.done: dict[tuple, Ran] = {}
        self.repo_copy: Path | None = None

    def ran(self, key: str, index: int = 0) -> Ran:
        """The `index`th run of README command `key` (see ENTRIES), run now if it has not run yet."""
        if (key, index) not in self.done:
            run = runs_of(ENTRIES[key])[index]
            tokens = [self.fill(token, run.fill) for token in shlex.split(run.instead or typed(key))]
            dirs = [arg for arg in run.extra if arg.startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
            assert not dirs, f"{key}: {dirs} appended; a README line is proven with the dirs it types"
            cwd = self.cwd(run)
            argv = [*self.argv(tokens, elsewhere=cwd != self.repo_copy), *run.extra]
            shared = run.where == "scratch" and not (run.interrupt_when or run.prepare or run.repeat > 1)
            if shared and ("argv", *argv) in self.done:  # the same command, typed twice in README.md
                self.done[key, index] = self.done[("argv", *argv)]
            else:
                if run.prepare:
                    run.prepare(cwd)
                self.done[key, index] = self.execute(argv, cwd, run, torchrun=tokens[0] == "torchrun")
                if shared:
                    self.done[("argv", *argv)] = self.done[key, index]
        return self.done[key, index]

    def cwd(self, run: Run) -> Path:
        if run.where == "scratch":
            return self.factory.mktemp("cwd")
        if run.where == "repo":
            return self.repo()
        return self.ran(run.where).cwd

    def repo(self) -> Path:
        """A copy of the working tree (not /work/main itself: its outputs/ stays untouched)."""
        if self.repo_copy is None:
            self.repo_copy = self.factory.mktemp("clone") / ROOT.name
            for name in working_tree_files():
                (self.repo_copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, self.repo_copy / name)
        return self.repo_copy

    def value(self, name: str) -> str:
        """What a placeholder stands for, taken from an earlier command's outputs."""
        if name == "port":
            return str(free_port())
        if name == "run":  # the quickstart's run, as the eval line's relative path names it
            return self.ran("python train.py", 0).run_dir().name
        if name == "ckpt":
            return str(self.ran("python train.py", 0).run_dir() / "checkpoints" / "last.ckpt")
        # copier:if gpt_example
        if name == "gpt_ckpt":  # the text task's checkpoint
            return str(self.ran("python train.py experiment=shakespeare_gpt").run_dir() / "checkpoints" / "last.ckpt")
        # copier:endif
        if name == "file":  # a one-epoch run's checkpoint, so that continuing from it trains
            return str(self.ran("python train.py", 1).run_dir() / "checkpoints" / "last.ckpt")
        raise KeyError(f"no value for {{{name}}}: add it to Runner.value")

    def fill(self, token: str, fill: dict[str, str]) -> str:
        """`token` with its placeholders replaced: `<name>` anywhere in it, a bare one (N, HOST:PORT) as its value."""
        for placeholder, template in fill.items():
            key, equals, value = token.rpartition("=")
            if placeholder.startswith("<") and placeholder in token:
                token = token.replace(placeholder, template.format_map(Values(self)))
            elif equals and value == placeholder:
                token = f"{key}={template.format_map(Values(self))}"
        assert not re.search(r"<[^>]*>", token), f"placeholder left in {token!r}: give its value in the entry's fill"
        return token

    @staticmethod
    def argv(tokens: list[str], elsewhere: bool) -> list[str]:
        """The command's argv: this environment's python or torchrun; its script from the repo when run elsewhere."""
        program, *args = tokens
        if program in ("python", "torchrun"):
            executable = sys.executable if program == "python" else str(Path(sys.executable).with_name("torchrun"))
            script = next((i for i, arg in enumerate(args) if not arg.startswith("-")), None)
            if elsewhere and script is not None and args[script].endswith(".py"):
                args[script] = str(ROOT / args[script])
            return [executable, *args]
        if program == "make":
            return [shutil.which("make") or "make", *args]
        raise AssertionError(f"no way to run {program!r} here: teach Runner.argv, or give the command a NotRun entry")

    @staticmethod
    def execute(argv: list[str], cwd: Path, run: Run, torchrun: bool = False) -> Ran:
        before = {path for pattern in ("outputs/*/runs/*", "outputs/*/multiruns/*") for path in cwd.glob(pattern)}
        env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(LOOPBACK if torchrun else {})}
        start = time.monotonic()
        stdout, stderr, returncode = "", "", 0
        for _ in range(run.repeat):
            # Files, not pipes: a run that is polled (interrupt_when) must never block on a full pipe.
            with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
                process = warm.popen(argv, cwd, env, out, err)  # a fresh `python` where a fork could differ
                try:
                    if run.interrupt_when:
                        wait_for(cwd / run.interrupt_when, process)
                        process.send_signal(signal.SIGTERM)
                    process.wait(timeout=TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass  # its exit code (-9) and output say so below
                finally:
                    if process.poll() is None:
                        os.killpg(process.pid, signal.SIGKILL)  # every rank it started, too
                        process.wait()
                out.seek(0)
                err.seek(0)
                stdout, stderr = stdout + out.read(), stderr + err.read()
            returncode = process.returncode
            if returncode != run.exit_code:
                break
        return Ran(argv, cwd, returncode, stdout, stderr, time.monotonic() - start, before)


class Values(dict):
    """`{name}` in a fill value: the Runner's value for it, computed only when asked for."""

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self.runner = runner

    def __missing__(self, name: str) -> str:
        return self.runner.value(name)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended (exit {process.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)


def runs_of(entry: Run | tuple[Run, ...]) -> tuple[Run, ...]:
    return entry if isinstance(entry, tuple) else (entry,)


# What each one must leave behind.


def metrics(run_dir: Path, names: set[str] = TRAIN_METRICS) -> dict[str, float]:
    path = run_dir / "metrics.json"
    assert path.is_file(), f"no metrics.json in {run_dir}: {sorted(p.name for p in run_dir.iterdir())}"
    values = json.loads(path.read_text())
    assert names <= values.keys(), f"{path} lacks {names - values.keys()}"
    return values


def last_epoch(run_dir: Path) -> int:
    """The epoch that `last.ckpt` closes, counted from 1."""
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] + 1


def trained(name: str | None = None, epochs: int = 1, names: set[str] = TRAIN_METRICS) -> Callable[[Ran], Path]:
    """One new run dir (named `name`), its metrics.json (with `names`), and last.ckpt after `epochs` epochs."""

    def check(ran: Ran) -> Path:
        run_dir = ran.run_dir()
        assert name is None or run_dir.name == name, run_dir
        metrics(run_dir, names)
        written = [path.parent for path in (ran.cwd / "outputs" / "train").rglob("metrics.json")]
        assert [path for path in written if not ran.before & {path, *path.parents}] == [run_dir], written
        assert (run_dir / "checkpoints" / "last.ckpt").is_file(), f"no checkpoints/last.ckpt in {run_dir}"
        assert last_epoch(run_dir) == epochs
        return run_dir

    return check


def every_experiment(ran: Ran) -> None:
    """One sweep, a job per file of conf/experiment/, each completed: on a fresh dir too (the on-disk experiments write
    their embedded data first)."""
    experiments = sorted(path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml"))
    jobs = json.loads((ran.sweep_dir() / "summary.json").read_text())["jobs"]
    assert len(jobs) == len(experiments), (experiments, jobs)
    assert all(job["status"] == "completed" for job in jobs), jobs


def swept(jobs: int, columns: tuple[str, ...] = ()) -> Callable[[Ran], Path]:
    """One new sweep dir with `jobs` job dirs, each with metrics.json and last.ckpt, and the summary of them all."""

    def check(ran: Ran) -> Path:
        sweep_dir = ran.sweep_dir()
        job_dirs = sorted(path.name for path in sweep_dir.iterdir() if path.is_dir() and path.name.isdigit())
        assert job_dirs == [str(num) for num in range(jobs)], f"job dirs in {sweep_dir}: {job_dirs}"
        for job in job_dirs:
            metrics(sweep_dir / job)
            assert (sweep_dir / job / "checkpoints" / "last.ckpt").is_file(), f"job {job}: no last.ckpt"
        summary = json.loads((sweep_dir / "summary.json").read_text())["jobs"]
        assert sorted(job["job"] for job in summary) == list(range(jobs))
        assert all(job["status"] == "completed" for job in summary), summary
        best = [job["metrics"]["val/acc_best"] for job in summary]
        assert best == sorted(best, reverse=True), f"summary not best first: {best}"
        header, *rows = (sweep_dir / "summary.csv").read_text().splitlines()
        assert len(rows) == jobs and all(column in header.split(",") for column in columns), header
        return sweep_dir

    return check


def ddp_sweep(ran: Ran) -> None:
    """The sweep launched once; each of its 2 jobs ran its own 2 ranks, logged in its dir; no rank is left behind."""
    sweep_dir = swept(2)(ran)
    assert ran.output.count("Launching 2 jobs locally") == 1, "the sweep was launched more than once"
    for job in ("0", "1"):
        log = (sweep_dir / job / "train.log").read_text()
        assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and SECOND_RANK in log, f"job {job} did not run 2 ranks"
    assert not processes_mentioning(str(sweep_dir)), "a rank outlived its sweep"
    for job in ("0", "1"):  # one metrics.json per job, none per rank
        assert [path.parent for path in (sweep_dir / job).rglob("metrics.json")] == [sweep_dir / job]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found += [args] if text in args else []
    return found


def quickstart_as_typed(ran: Ran) -> None:
    """The quickstart from the repo root: the accuracy README.md states, nothing printed a warning (the run-dir guard
    once failed and was skipped with one), and the run dir's lock released at exit."""
    run_dir = trained(epochs=20)(ran)
    assert not (run_dir / LOCK_FILE).exists(), "the run left its lock behind"
    assert metrics(run_dir)["test/acc"] >= 0.97
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "csv" / "metrics.csv").is_file()
    warnings = [line for line in ran.output.splitlines() if re.search("warning", line, re.IGNORECASE)]
    assert not warnings, "a plain run printed warnings:\n" + "\n".join(warnings[:10])


def help_lists_the_groups(ran: Ran) -> None:
    assert all(group in ran.stdout for group in ("strategy", "precision", "hparams_search")), ran.stdout[-2000:]
    assert not (ran.cwd / "outputs").exists(), "--help made an outputs dir"


def job_config_printed(ran: Ran) -> None:
    config = OmegaConf.create(ran.stdout)
    assert {"trainer", "model", "data", "strategy"} <= set(config.keys()), list(config.keys())
    assert not (ran.cwd / "outputs").exists(), "--cfg job made an outputs dir"


def evaluated(ran: Ran) -> None:
    """eval.py on the quickstart's last.ckpt: its own run dir with the test metrics of a trained model."""
    assert metrics(ran.run_dir("eval"), {"test/acc", "test/loss"})["test/acc"] >= 0.95


def predicted(ran: Ran) -> None:
    """One prediction per row of digits.csv, in the predict run dir, as right as the model's test accuracy."""
    with open(ran.run_dir("predict") / "predictions.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    labels = [row[64] for row in digit_rows()[: len(rows)]]
    assert len(rows) == 200, len(rows)
    correct = sum(int(row["prediction"]) == label for row, label in zip(rows, labels, strict=True))
    assert correct >= 0.95 * len(rows), f"{correct} of {len(rows)} raw digit rows predicted right"


# copier:if gpt_example
def generated(ran: Ran) -> None:
    """The prompt and 200 characters of the text's vocabulary, in the predict run dir and on stdout."""
    text = (ran.run_dir("predict") / "generated.txt").read_text(encoding="utf-8")
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 200, repr(text)
    vocab = OmegaConf.load(ROOT / "conf" / "data" / "shakespeare.yaml").vocab
    assert set(text) <= set(vocab), set(text) - set(vocab)
    assert text in ran.stdout


# copier:endif


def exported_onnx(ran: Ran) -> None:
    import onnxruntime

    (model,) = ran.run_dir("export").glob("*.onnx")
    session = onnxruntime.InferenceSession(str(model))
    shape = [2 if not isinstance(dim, int) else dim for dim in session.get_inputs()[0].shape]
    (logits,) = session.run(None, {session.get_inputs()[0].name: torch.zeros(shape).numpy()})
    assert logits.shape == (2, 10), logits.shape


def plotted_and_logged_everywhere(ran: Ran) -> None:
    run_dir = trained()(ran)
    assert list((run_dir / "plots").glob("*.png")), "no PNG in plots/"
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard events"
    assert (run_dir / "mlflow.db").is_file(), "no MLflow store"
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run"
    assert (run_dir / "csv" / "metrics.csv").is_file()


def lr_found(ran: Ran) -> None:
    assert json.loads((trained()(ran) / "lr_find.json").read_text())["suggestion"] > 0


def bf16_said_once(ran: Ran) -> None:
    """16-mixed on a CPU: one process, one line saying it runs bf16-mixed, and not Lightning's own notices; the run
    dir's config says what ran (bf16-mixed), its overrides what was typed."""
    run_dir = trained()(ran)
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").precision == "bf16-mixed"  # what ran
    assert "precision=16-mixed" in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")  # what was typed
    said = ran.output.count("so this run uses precision=bf16-mixed")
    assert said == 1, f"the bf16 notice printed {said} times"
    assert "AMP with fp16 is not supported on CPU" not in ran.output  # Lightning's own, replaced by ours
    assert "litlogger" not in ran.output  # Lightning's advert, printed by every Trainer


def two_ranks(ran: Ran) -> None:
    trained()(ran)
    assert SECOND_RANK in ran.output, "no second process joined"


GPT_METRICS = {"val/loss_best", "test/loss", "test/ppl"}  # copier:if gpt_example


def sharded(data_parallel: int, names: set[str] = TRAIN_METRICS) -> Callable[[Ran], None]:
    """Two processes, sharded over `data_parallel` of them (the rest tensor parallel), the task's metrics."""

    def check(ran: Ran) -> None:
        trained(names=names)(ran)
        assert SECOND_RANK in ran.output, "no second process joined"
        assert f"Sharded over {data_parallel} data-parallel process(es)" in ran.output

    return check


def killed_midway(ran: Ran) -> None:
    """SIGTERM after the first epoch: preempted.ckpt saved, exit 75 with one line and no traceback, no metrics."""
    run_dir = ran.run_dir()
    assert run_dir.name == "mlp-adam"
    assert "preempted:" in ran.stderr and "Traceback" not in ran.output, ran.output[-3000:]
    assert (run_dir / "checkpoints" / "preempted.ckpt").is_file()
    assert not (run_dir / "metrics.json").exists()


def continued(ran: Ran) -> None:
    """The same command in the same dir continues the killed run from its preempted.ckpt to the last epoch."""
    run_dir = ran.cwd / "outputs" / "train" / "runs" / "mlp-adam"
    assert not ran.new("outputs/train/runs/*"), "the re-run made a new run dir"
    assert re.search(r"Resuming from \S*mlp-adam/checkpoints/preempted\.ckpt", ran.output), ran.output[-3000:]
    metrics(run_dir)
    assert last_epoch(run_dir) == 5


def written_in_the_background(ran: Ran) -> None:
    """async_checkpoint=true: a finished run whose Trainer line says a background thread writes its checkpoints."""
    trained()(ran)
    assert "async_checkpoint=true (checkpoints written by a background thread)" in ran.output, ran.output[-3000:]


def continued_elsewhere(ran: Ran) -> None:
    """ckpt_path=<file>: a new run dir, continuing from the 1-epoch checkpoint to epoch 2."""
    trained(epochs=2)(ran)
    assert re.search(r"Resuming from \S*checkpoints/last\.ckpt", ran.output), ran.output[-3000:]


def fine_tuned(ran: Ran) -> None:
    """A new run (epoch 0 on) from the quickstart's weights, its first layer frozen for epochs 0 and 1 only."""
    run_dir = trained(epochs=3)(ran)
    assert re.search(r"Initialized (\d+) of \1 tensors from \S*last\.ckpt", ran.output), ran.output[-3000:]
    assert "Resuming" not in ran.output
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert config.callbacks.freeze.modules == ["net.layers.1"] and config.callbacks.freeze.unfreeze_at_epoch == 2


def shared_the_machine(ran: Ran, sequential: Ran) -> None:
    """3 jobs, 2 at a time: each job's log names its slot (0 or 1) and its share of the cores as torch threads, and
    each job learned what the same job (its seed at the default lr=1e-3) learned in the sequential sweep, to 1e-6."""
    sweep_dir = swept(3, ("seed",))(ran)
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    for job in ("0", "1", "2"):
        log = (sweep_dir / job / "train.log").read_text()
        found = re.search(r"Machine share: slot (\d) of 2 parallel jobs, (\d+) torch thread", log)
        assert found and found[1] in "01" and int(found[2]) == threads, f"job {job}: {found}"
    learned = {}
    for path in (sweep_dir, sequential.sweep_dir()):
        for job in json.loads((path / "summary.json").read_text())["jobs"]:
            own = dict(override.split("=", 1) for override in job["overrides"])
            if float(own.get("model.optimizer.lr", "1e-3")) == 1e-3:
                learned.setdefault(own["seed"], []).append({k: v for k, v in job["metrics"].items()
                                                            if k.startswith(("val/", "test/"))})  # fmt: skip
    assert sorted(learned) == ["1", "2", "3"] and all(len(runs) == 2 for runs in learned.values()), learned
    for seed, (parallel, basic) in learned.items():
        assert parallel.keys() == basic.keys() and parallel, seed
        assert all(parallel[k] == pytest.approx(v, abs=1e-6) for k, v in basic.items()), (seed, parallel, basic)


def optuna_swept(ran: Ran) -> None:
    """A sweep of 2 trials, best first, each trial's point of the search space reaching its job's config, each job
    its trial in the study the sweep dir holds (a journal file), each trial's val/acc reported to it per epoch."""
    import optuna

    sweep_dir = swept(2)(ran)
    study = optuna.load_study(study_name="digits_optuna", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / "optuna.journal"))))  # fmt: skip
    trials = {trial.number: trial for trial in study.trials}
    for job in json.loads((sweep_dir / "summary.json").read_text())["jobs"]:
        own = dict(override.split("=", 1) for override in job["overrides"])
        assert own["model/optimizer"] in ("adam", "adamw", "sgd"), own
        assert f"batch_size: {own['data.batch_size']}" in (Path(job["dir"]) / ".hydra" / "config.yaml").read_text()
        trial = trials[job["trial"]]
        assert job["state"] == trial.state.name == "COMPLETE" and trial.params == job["params"]
        assert trial.value == pytest.approx(job["metrics"]["val/acc_best"]) and list(trial.intermediate_values) == [0]
    assert "Best trial: " in ran.stdout and (sweep_dir / "optimization_results.yaml").is_file()


def optuna_study_continued(ran: Ran) -> None:
    """Run twice: two sweep dirs of 2 trials each, and one study of 4 distinct trials in the sqlite file."""
    import optuna

    sweeps = ran.new("outputs/train/multiruns/*")
    assert len(sweeps) == 2, sweeps
    study = optuna.load_study(study_name="digits_optuna", storage=f"sqlite:///{ran.cwd}/outputs/optuna.db")
    states = [trial.state for trial in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 4, states
    assert len({tuple(sorted(trial.params.items())) for trial in study.trials}) == 4  # the second run explored anew


def grouped_over(key: str, groups: int, size: int) -> Callable[[Ran], None]:
    """A sweep over a replicate key: its groups of `size` jobs each, printed and written, with the mean and std of
    the monitored metric over exactly the jobs of that group."""

    def check(ran: Ran) -> None:
        sweep_dir = swept(groups * size)(ran)
        report = json.loads((sweep_dir / "summary.json").read_text())
        assert report["replicate_keys"] == [key] and len(report["groups"]) == groups, report["groups"]
        by_job = {job["job"]: job["metrics"]["val/acc_best"] for job in report["jobs"]}
        for group in report["groups"]:
            values = [by_job[job] for job in group["jobs"]]
            assert group["n"] == size and group["failed"] == 0
            assert group["metrics"]["val/acc_best"]["mean"] == pytest.approx(statistics.fmean(values))
            assert group["metrics"]["val/acc_best"]["std"] == pytest.approx(statistics.stdev(values))
        means = [group["metrics"]["val/acc_best"]["mean"] for group in report["groups"]]
        assert means == sorted(means, reverse=True), means
        assert f"Groups over {key}: {groups} group{'s' if groups > 1 else ''}," in ran.stdout
        assert len((sweep_dir / "groups.csv").read_text().splitlines()) == groups + 1

    return check


def prepared(out: str, columns: set[str]) -> Callable[[Ran], None]:
    """A dataset at `out` under the cwd: Arrow splits and a prepared.json naming `columns`; prepare's log in its run."""

    def check(ran: Ran) -> None:
        description = json.loads((ran.cwd / out / "prepared.json").read_text())
        assert set(description["columns"]) == columns and all(description["rows"].values()), description
        assert {path.name for path in (ran.cwd / out).iterdir()} >= {"train", "val", "test", "dataset_dict.json"}
        assert (ran.run_dir("prepare") / "prepare.log").is_file()

    return check


def trained_on_what_it_wrote(out: str, names: set[str] = TRAIN_METRICS) -> Callable[[Ran], None]:
    """A run `trained` accepts, in a dir with no dataset before it: it wrote its embedded one to `out` first."""

    def check(ran: Ran) -> None:
        trained(names=names)(ran)
        description = json.loads((ran.cwd / out / "prepared.json").read_text())
        assert all(description["rows"].values()) and "on first use (once)" in ran.output, description

    return check


def write_image_folder(cwd: Path) -> None:
    """my_images/ as a user has it: one subfolder per class of 8-bit grey PNGs (some of the embedded digits)."""
    from PIL import Image

    for row in digit_rows()[:120]:
        folder = cwd / "my_images" / f"digit_{row[-1]}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = torch.tensor(row[:64], dtype=torch.float32).reshape(8, 8) * 255 / 16
        Image.fromarray(pixels.round().to(torch.uint8).numpy(), mode="L").save(
            folder / f"{len(list(folder.iterdir()))}.png"
        )


def make_help_lists_targets(ran: Ran) -> None:
    assert all(f"make {target}" in ran.stdout for target in ("install", "train", "test", "lint", "clean")), ran.stdout


def succeeded(ran: Ran) -> None:
    """Its exit code (checked for every command) is all there is to check."""


OPTUNA = ("optuna",)
TRIALS = ("hydra.sweeper.n_trials=2", *SHORT)
FIVE_EPOCHS = ("trainer.max_epochs=5", *LIMITS)  # room to be killed after the first
ENTRIES: dict[str, Run | tuple[Run, ...] | NotRun | Covered | Same] = {
    # Quickstart.
    "make train": Covered(
        "tests/template/test_make.py::test_the_first_make_train_installs_then_trains_and_the_next_only_trains",
        "what it runs; .ci/run runs it as typed in a fresh clone, and this suite inside the venv it made",
    ),
    "make test": NotRun("this suite itself: .ci/run runs it as typed in a fresh clone"),
    "make train [2]": Same("make train"),
    "make train [3]": Same("make train"),
    "make test [2]": Same("make test"),
    "make test [3]": Same("make test"),
    "make test-fast": NotRun("this suite, its quick part: .ci/run runs it in a venv with the dev extra alone"),
    "make train TORCH=torch==2.13.0": Covered(
        "tests/template/test_make.py::test_torch_is_installed_first_when_given", "the install command it runs"
    ),
    "python train.py": (
        Run(quickstart_as_typed, extra=(), where="repo"),  # as typed, from the repo root
        Run(trained()),  # from another directory; its checkpoint is `<file>` below
    ),
    "python eval.py ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt": Run(
        evaluated, extra=(), fill={"<run>": "{run}"}, where="python train.py"
    ),
    "python train.py --help": Run(help_lists_the_groups, extra=()),
    "python train.py --cfg job": Run(job_config_printed, extra=()),
    # Switches.
    "python train.py strategy=ddp precision=16-mixed": Run(bf16_said_once),
    "python train.py strategy=ddp trainer.devices=2": Run(two_ranks),
    "python train.py strategy=dp trainer.devices=4": Run(trained()),
    "python train.py strategy=fsdp trainer.devices=2": Run(sharded(2)),
    "python train.py accumulate_grad_batches=4 gradient_clip_val=1.0": Run(trained()),
    "python train.py model/net=cnn model/optimizer=sgd model/scheduler=onecycle": Run(trained()),
    "python train.py experiment=digits_cnn": Run(trained()),
    "python train.py -m 'experiment=glob(*)' trainer.max_epochs=1": Run(every_experiment, needs=("datasets",)),
    # copier:if gpt_example
    "python train.py experiment=shakespeare_gpt strategy=fsdp trainer.devices=2": Run(sharded(2, GPT_METRICS)),
    "python train.py experiment=shakespeare_gpt strategy=model_parallel trainer.devices=2 strategy.tensor_parallel_size=2": Run(  # noqa: E501
        sharded(1, GPT_METRICS)
    ),
    "python train.py experiment=shakespeare_gpt": Run(trained(names={"val/loss_best", "test/loss", "test/ppl"})),
    'python predict.py ckpt_path=<ckpt> prompt="ROMEO:" max_new_tokens=200': Run(
        generated, extra=(), fill={"<ckpt>": "{gpt_ckpt}"}
    ),
    # copier:endif
    # When a run dies: the first is killed (SIGTERM) after its first epoch, the second continues it in its dir.
    "python train.py run_name=mlp-adam trainer.max_epochs=50": Run(
        killed_midway,
        extra=FIVE_EPOCHS,
        interrupt_when="outputs/train/runs/mlp-adam/checkpoints/last.ckpt",
        exit_code=75,
    ),
    "python train.py run_name=mlp-adam trainer.max_epochs=50 [2]": Run(
        continued, extra=FIVE_EPOCHS, where="python train.py run_name=mlp-adam trainer.max_epochs=50"
    ),
    "python train.py ckpt_path=<file>": Run(
        continued_elsewhere, extra=("trainer.max_epochs=2", *LIMITS), fill={"<file>": "{file}"}
    ),
    "python train.py async_checkpoint=true callbacks.last_checkpoint.every_n_train_steps=500": Run(
        written_in_the_background
    ),
    "python benchmarks/async_checkpoint.py": Covered(
        "tests/template/test_async_checkpoint_benchmark.py::test_quick_async_checkpoint_benchmark_reports_every_number",
        "runs it with --quick (a narrow MLP, one run per variant); the full one is 9 trainings of a wide MLP",
    ),
    # Fine-tuning: from the quickstart's checkpoint.
    "python train.py init_from=<ckpt> callbacks=finetune 'callbacks.freeze.modules=[net.layers.1]' "
    "callbacks.freeze.unfreeze_at_epoch=2": Run(
        fine_tuned, extra=("trainer.max_epochs=3", *LIMITS), fill={"<ckpt>": "{ckpt}"}
    ),
    # Scaling out.
    "python train.py strategy=ddp trainer.devices=N": Run(two_ranks, fill={"N": "2"}),
    "python train.py strategy=dp trainer.devices=N": Run(trained(), fill={"N": "4"}),
    "torchrun --nnodes=M --nproc_per_node=N --node_rank=R --rdzv-id=JOB --rdzv-endpoint=HOST:PORT train.py "
    "strategy=ddp trainer.num_nodes=M trainer.devices=N": Run(
        trained("torchrun-readme"),
        fill={"M": "1", "N": "2", "R": "0", "JOB": "readme", "HOST:PORT": "127.0.0.1:{port}"},
    ),
    "python train.py -m cluster=slurm hydra.launcher.partition=P strategy=ddp trainer.num_nodes=M trainer.devices=N": (
        Run(
            swept(1),
            instead="python train.py -m cluster=local strategy=ddp trainer.num_nodes=1 trainer.devices=1",
            why="no SLURM here: cluster=local is the same submitit launcher path, on this machine",
            needs=("hydra_plugins.hydra_submitit_launcher",),
        )
    ),
    'pip install -e ".[slurm]"': NotRun("CI's own install step (the slurm extra)"),
    "sbatch": NotRun("no SLURM here; the script it submits runs the srun line below"),
    "srun python train.py strategy=ddp trainer.num_nodes=M trainer.devices=N": NotRun(
        "no SLURM here; the slurm-<job id> run dir is unit-tested in lib/tests/test_distributed.py"
    ),
    # Performance.
    "python benchmarks/bench.py --threads 1": Covered(
        "tests/template/test_benchmark.py::test_quick_benchmark_reports_every_number",
        "runs it with --quick --sizes digits, the shortened form this line's comment names",
    ),
    # copier:if gpt_example
    "python benchmarks/sharding.py": Covered(
        test="tests/template/test_benchmark_sharding.py::test_sharding_benchmark_measures_fsdp_holding_a_share_of_the_training_state",
        why="runs it with --quick --only fsdp: the whole table is five trainings (four of 2 processes) of a wider GPT",
    ),
    # copier:endif
    "python benchmarks/bench.py --switches digits,mnist60k": NotRun(
        "timing runs: 79 s here even with --quick --sizes digits --only cpu_threads=1; bench.py's checks of "
        "--switches/--only are in tests/template/test_benchmark.py"
    ),
    'python -c "import lightning"': Run(succeeded, extra=()),
    # Sweeps.
    "python train.py -m model.optimizer.lr=1e-3,1e-2 model/optimizer=adam,sgd": Run(
        swept(4, ("model.optimizer.lr", "model/optimizer"))
    ),
    "python train.py -m seed=1,2,3 hydra/launcher=joblib hydra.launcher.n_jobs=2": Run(
        shared_the_machine,
        needs=("hydra_plugins.hydra_joblib_launcher",),
        against="python train.py -m seed=1,2,3 model.optimizer.lr=1e-3,1e-2",  # the same 3 jobs at lr=1e-3, in turn
    ),
    "python train.py hparams_search=digits_optuna": Run(optuna_swept, extra=TRIALS, needs=OPTUNA),
    "python train.py hparams_search=digits_optuna hydra.sweeper.storage=sqlite:///outputs/optuna.db": Run(
        optuna_study_continued, extra=TRIALS, needs=OPTUNA, repeat=2
    ),
    "python train.py hparams_search=digits_optuna hydra.sweeper.storage=postgresql://USER:PASSWORD@HOST/DB": Covered(
        "lib/tests/test_optuna.py::test_two_processes_share_one_postgresql_study",
        "needs a PostgreSQL server: that test starts a throwaway one and runs two such workers at once on one study",
    ),
    "optuna-dashboard sqlite:///outputs/optuna.db": Covered(
        "lib/tests/test_optuna.py::test_optuna_dashboard_serves_the_trials_of_a_study",
        "a server: that test starts it on loopback on a sqlite study and reads the trials through its HTTP API",
    ),
    "python train.py -m strategy=ddp trainer.devices=2 model.optimizer.lr=0.1,0.01": Run(ddp_sweep),
    "python train.py -m seed=1,2,3 model.optimizer.lr=1e-3,1e-2": Run(grouped_over("seed", groups=2, size=3)),
    "python train.py -m data.fold=0,1,2,3,4 data.num_folds=5": Run(grouped_over("data.fold", groups=1, size=5)),
    # Start your own project.
    'pip install -e ".[template]"': NotRun("CI's own install step (the template extra)"),
    "python train.py model=<name> data=<name> monitor=val/loss mode=min": Covered(
        "lib/tests/test_outside_task.py::test_outside_task_trains_by_its_monitor_and_eval_reproduces_its_test_metric",
        "placeholders for a user's task: that test trains two such tasks (a regression and Lightning's boring "
        "classes) with only `_target_` + arguments configs, monitor=<its metric> mode=min",
    ),
    "cd their_project": Covered(
        "lib/tests/test_outside_task.py::test_outside_task_trains_by_its_monitor_and_eval_reproduces_its_test_metric",
        "that test's commands run from a copy of lib/tests/outside_task/, an outside project",
    ),
    "PYTHONPATH=. python <hydralight>/train.py 'hydra.searchpath=[file://conf]' model=<name> data=<name> "
    "monitor=val/loss mode=min": Covered(
        "lib/tests/test_outside_task.py::test_outside_task_trains_by_its_monitor_and_eval_reproduces_its_test_metric",
        "exactly this command, placeholders filled, from the outside project's dir with default run dirs",
    ),
    # copier:template-only-start
    "copier copy --trust <path or git URL of hydralight> my-project": Covered(
        "tests/template/test_template.py::test_the_copy_is_the_template_renamed",
        "copier copy of this working tree (a throwaway git repo of it), then every file of the copy compared",
    ),
    'cd my-project && git init && git add -A && git commit -m "New project from hydralight"': Covered(
        "tests/template/test_template.py::test_copier_update_brings_a_later_template_change",
        "git init, add and commit in a fresh copy, as this line does",
    ),
    "make train && make test": Covered(
        "tests/template/test_template.py::test_the_copy_installs_the_library_by_version_trains_and_passes_its_tests",
        "installs a copy into a fresh virtualenv as its .ci/install does (hydralight from the template's lib/ at the "
        "copy's commit, then the copy), trains and runs its tests",
    ),
    "copier update [2]": Same("copier update --trust"),
    "python train.py [2]": Same("python train.py"),
    "copier update": Same("copier update --trust"),
    'pip install -e ".[template]" [2]': NotRun("the install step above, again"),
    # copier:template-only-end
    "python train.py [3]": Same("python train.py"),
    'make train TORCH="torch --index-url https://download.pytorch.org/whl/cpu"': NotRun(
        "PyTorch's CPU index is on the network; CI installs a CPU build the same way, TORCH=torch==2.13.0 from disk"
    ),
    "make": NotRun("the tool's name, in prose (`make train`: the quickstart's)"),
    "make train [4]": Same("make train"),
    "copier copy": NotRun("the name of the command that made a copy, in prose (the template's tests make copies)"),
    "copier update --trust": NotRun(
        "copier's own command on a copy; tests/template/test_template.py merges a later template tag into one"
    ),
    "copier update --trust --data <question>=<new answer>": NotRun(
        "copier's own option to change an answer; needs a copy made by copier copy, which test_template.py has"
    ),
    # Notebooks, loggers, pictures, predict, export, tools.
    'pip install -e ./lib -e ".[dev,plots,notebooks,loggers,onnx]"': NotRun("CI's own install step (the extras)"),
    "python train.py callbacks=plots logger=many": Run(
        plotted_and_logged_everywhere, needs=("matplotlib", "tensorboard", "mlflow", "wandb")
    ),
    "python predict.py ckpt_path=<ckpt> input=digits.csv": Run(
        predicted, extra=(), fill={"<ckpt>": "{ckpt}"}, prepare=write_digits_csv
    ),
    "python export.py ckpt_path=<ckpt> format=onnx": Run(
        exported_onnx, extra=(), fill={"<ckpt>": "{ckpt}"}, needs=("onnx", "onnxscript", "onnxruntime")
    ),
    "python train.py tune=lr_find": Run(lr_found, extra=(*SHORT, "callbacks.lr_find.num_training_steps=20")),
    "make help": Run(make_help_lists_targets, extra=(), where="repo"),
    'pip install -e ".[hf]"': NotRun("CI's own install step (the hf extra)"),
    # Data.
    'pip install -e ".[mnist-download]"': NotRun("CI's own install step; and data.download=true needs a network"),
    'pip install -e ".[ondisk]"': NotRun("CI's own install step (the ondisk extra)"),
    "python train.py experiment=ondisk_images": Run(trained_on_what_it_wrote("data/digits"), needs=("datasets",)),
    "python prepare.py source=folder source.path=my_images out=data/my_images": Run(
        prepared("data/my_images", {"image", "label"}), extra=(), prepare=write_image_folder, needs=("datasets", "PIL")
    ),
    "python train.py experiment=ondisk_images data.path=data/my_images": Run(
        trained(), where="python prepare.py source=folder source.path=my_images out=data/my_images", needs=("datasets",)
    ),
    # copier:if gpt_example
    "python train.py experiment=ondisk_text": Run(
        trained_on_what_it_wrote("data/text", GPT_METRICS), needs=("datasets",)
    ),
    # copier:endif
    # Tests.
    'pytest -m "not slow"': NotRun("this suite itself"),
    "pytest": NotRun("this suite itself"),
    "pytest --cov": NotRun("this suite itself"),
    'pip install -e ./lib -e ".[dev,sweeps,slurm,plots,notebooks,loggers,onnx,template,ondisk,hf]"': NotRun(
        "CI's own install step"
    ),
}


# The tests.

COMMANDS = readme_commands(README.read_text())
# "Drop an example": one `rm -r` of an example's files each, run as typed in a copy by that test.
ENTRIES.update(
    {
        command: Covered(
            "tests/template/test_template.py::test_a_copy_whose_examples_are_deleted_as_the_readme_says_passes_its_suite",
            "run as typed in a fresh copy, whose suite then passes; the files are those copier.yml leaves out",
        )
        for command in COMMANDS
        if command.startswith("rm -r src/my_project/")
    }
)


def missing_message(commands: list[str]) -> str:
    return (
        "README.md shows commands test_readme.py does not run: add an entry to ENTRIES for each, saying how "
        "it runs here (Run) or why it cannot (NotRun, Covered):\n  " + "\n  ".join(commands)
    )


@pytest.fixture(scope="class")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(tmp_path_factory)


def test_every_readme_command_has_an_entry():
    """A command added to README.md without saying how it is tested fails here; an entry README lost, too."""
    missing = [command for command in COMMANDS if command not in ENTRIES]
    assert not missing, missing_message(missing)
    stale = [command for command in ENTRIES if command not in COMMANDS]
    assert not stale, "ENTRIES name commands README.md no longer shows:\n  " + "\n  ".join(stale)


def test_commands_are_found_in_blocks_tables_and_text():
    """The extraction finds a new command wherever README.md may put it: a bash block, a table cell, a sentence."""
    text = (
        "Run `python train.py a=1` first; `precision=8` is no command.\n"
        "| where | command |\n|---|---|\n| here | `torchrun --nnodes=M train.py` |\n\n"
        "```bash\npython eval.py ckpt_path=x   # a comment\n# a comment line\n\nmake help\n```\n"
        "```\nmetrics.json   not a shell block\n```\n"
        "A span over two lines: `srun python\ntrain.py` and `python eval.py ckpt_path=x` again.\n"
    )
    assert readme_commands(text) == [
        "python train.py a=1",
        "torchrun --nnodes=M train.py",
        "python eval.py ckpt_path=x",
        "make help",
        "srun python train.py",
        "python eval.py ckpt_path=x [2]",
    ]
    assert strip_comment('git commit -m "a # b"  # why') == 'git commit -m "a # b"'


def test_covered_and_same_entries_name_tests_that_exist():
    """A command left to another module names a test that is there; one named again names a README line."""
    for command, entry in ENTRIES.items():
        if isinstance(entry, Same):
            assert entry.command in ENTRIES and not isinstance(ENTRIES[entry.command], Same), command
        if isinstance(entry, Covered):
            module, name = entry.test.split("::")
            assert re.search(rf"^def {name}\(", (ROOT / module).read_text(), re.MULTILINE), (command, entry.test)


def marks(command: str) -> list[pytest.MarkDecorator]:
    multirun = " -m " in f" {command} " or "hparams_search=" in command
    return [pytest.mark.slow, *([pytest.mark.sweeps] if multirun else [])]


def check_readme_command(command: str, runner: Runner) -> None:
    """The README line, as typed: its exit code and what it leaves behind (run dirs, metrics, checkpoints, files)."""
    entry = ENTRIES.get(command)
    assert entry is not None, missing_message([command])
    if isinstance(entry, Same):
        entry = ENTRIES[entry.command]  # its runs are shared: run once for both lines
        command = ENTRIES[command].command
    if isinstance(entry, NotRun):
        pytest.skip(f"not run here: {entry.why}")
    if isinstance(entry, Covered):
        pytest.skip(f"run by {entry.test}: {entry.why}")
    for index, run in enumerate(runs_of(entry)):
        for module in run.needs:
            pytest.importorskip(module, reason=f"needs {module} (an optional extra)")
        ran = runner.ran(command, index)
        print(ran.line())
        assert ran.returncode == run.exit_code, (
            f"{ran.line()}\nexpected exit {run.exit_code}\n--- stdout ---\n{ran.stdout[-2000:]}\n"
            f"--- stderr ---\n{ran.stderr[-6000:]}"
        )
        assert "Traceback" not in ran.output, f"{ran.line()}\n--- output ---\n{ran.output[-6000:]}"
        run.check(ran) if run.against is None else run.check(ran, runner.ran(run.against))


# The commands in four groups, each with a Runner of its own, so that test workers share them (pytest-xdist's
# `--dist loadscope` runs a class on one worker): the commands that read an earlier one's outputs (a run dir, a
# checkpoint) together with the commands they read, then sweeps, multi-process runs, and the rest.
EARLIER = {
    "python train.py",
    "python train.py run_name=mlp-adam trainer.max_epochs=50",
    "python train.py experiment=shakespeare_gpt",  # copier:if gpt_example
    "python prepare.py source=folder source.path=my_images out=data/my_images",
}


def group(command: str) -> str:
    entry = ENTRIES.get(command)
    if isinstance(entry, Same):  # with the line it repeats, whose runs it shares
        return group(entry.command)
    runs = runs_of(entry) if isinstance(entry, Run | tuple) else ()
    if command in EARLIER or any("{" in value or run.where not in ("scratch", "repo")
                                 for run in runs for value in (*run.fill.values(), "")):  # fmt: skip
        return "chained"
    if " -m " in f" {command} " or "hparams_search=" in command:
        return "sweeps"
    if any(word in command for word in ("ddp", "torchrun", "srun", "sbatch", "devices=")):
        return "processes"
    return "others"


def commands_of(name: str) -> list:
    return [pytest.param(c, marks=marks(c), id=c) for c in COMMANDS if group(c) == name]


class ReadmeCommands:
    """The README commands of one `group`, with a Runner of their own (the `runner` fixture is per class)."""

    group = ""

    def test_readme_command(self, command: str, runner: Runner):
        check_readme_command(command, runner)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.cls is not None and issubclass(metafunc.cls, ReadmeCommands):
        metafunc.parametrize("command", commands_of(metafunc.cls.group))


class TestChainedCommands(ReadmeCommands):
    group = "chained"


class TestSweepCommands(ReadmeCommands):
    group = "sweeps"


class TestMultiProcessCommands(ReadmeCommands):
    group = "processes"


class TestOtherCommands(ReadmeCommands):
    group = "others"


def test_the_config_groups_table_names_every_option_of_every_group():
    """README "Config groups" lists every option of the project's groups (conf/) and the library's: a new config
    file the table does not name fails here, so the table cannot drift."""
    section = README.read_text().split("## Config groups", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    group = ""
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 2 and not (cells[0] and set(cells[0]) <= {"-"}) and cells[0] != "group":
            group = cells[0].strip("`") or group  # an empty first cell continues the group above
            rows[group] = rows.get(group, "") + " " + cells[1]
    library = ROOT / "lib" / "src" / "hydralight" / "conf"
    internal = {"hydra", "paths", "hydralight"}  # not switched by a user: one config each
    missing = []
    for root in (ROOT / "conf", library):
        for folder in sorted(path for path in root.rglob("*") if path.is_dir()):
            name = folder.relative_to(root).as_posix()
            if name.split("/")[0] in internal:
                continue
            row = rows.get(name.split("/")[0], "")
            missing += [f"{name}={option.stem}" for option in folder.glob("*.yaml") if f"`{option.stem}`" not in row]
    assert not missing, f"README's config-groups table does not name: {missing}"
