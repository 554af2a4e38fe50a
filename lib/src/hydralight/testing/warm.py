"""`python <script.py> <args>` for the suite's CLI runs, without paying the interpreter's start each time.

Every run of the CLI spends seconds importing torch, Lightning and torchmetrics before it reads its first argument,
and the suite runs the CLI about a hundred times. So each pytest worker keeps one warm interpreter: a server that
imported those libraries once and then, for each command, forks a child that takes the command's argv, cwd,
environment and output files and runs the script as `python` would run it (`__main__`, `sys.argv`, `sys.path[0]`),
in a session of its own. A command runs cold, as a fresh `python`, whenever the fork could differ from it:
- it is neither `python [-u] <entrypoint> ...` (train.py, eval.py, predict.py, export.py, prepare.py) nor
  `python -m torch.distributed.run ...` (torchrun's agent); not `-c`, any other `-m`, nor the `torchrun` script;
- its environment differs from the server's in a variable read while those libraries import (`PYTHON*`, thread
  counts other than OMP_NUM_THREADS, which the child applies with torch.set_num_threads, CUDA, `LD_*`);
- `HYDRALIGHT_TESTS_COLD=1` is set: the whole suite then runs every command cold, as CI ran it before.
The DDP ranks a warm child starts (Lightning's launcher runs `python <entrypoint> ...` again for each rank > 0) are
warm too, by the same rule: each warm child keeps a launcher, a fork of itself taken before its script starts, and
forks every rank from that clean state, in the child's own session and process group, as `subprocess.Popen` would
start it there (`RankSubprocess`). The workers of a warm torchrun agent are started the same way, each in a session
of its own as torchrun starts them.
What a warm start cannot show, a fresh interpreter proves: that `--help` and config errors never import torch
(test_cli_errors.py, PYTHONPROFILEIMPORTTIME), signals and kill -9 (test_reliability.py), the `torchrun` script
(the README's command, test_readme.py).
Warnings the libraries print while they import are printed again at the start of every child, as a fresh `python`
would print them.

Run as a script, this module is the server: `python hydralight.testing.warm <socket path>`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, NoReturn

PRELOADED = ("torch", "lightning", "lightning.pytorch", "torchmetrics", "hydra", "omegaconf")
# Environment variables read while PRELOADED imports (or by the interpreter itself): a command whose value differs
# from the server's runs cold. PYTHONPATH is the exception: the child puts its entries on sys.path as python would.
IMPORT_TIME_PREFIXES = ("PYTHON", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "CUDA_", "LD_", "TORCH", "PYTORCH_", "NVIDIA_")
# ... but for these, which torch reads only when it runs (torchrun sets them for its workers).
RUN_TIME_PREFIXES = ("TORCHELASTIC_", "TORCH_NCCL_", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE")
THREADS = "OMP_NUM_THREADS"  # a warm child applies its value with torch.set_num_threads, as torch would at start
COLD = "HYDRALIGHT_TESTS_COLD"
# The scripts that run warm: the CLI's entrypoints. Each imports Lightning only after Hydra has set up logging, and
# Lightning's import configures its loggers by that (its own handler only where the root logger has none): the server
# imports it in that same state.
ENTRYPOINTS = ("train.py", "eval.py", "predict.py", "export.py", "prepare.py")
MODULES = ("torch.distributed.run",)  # `python -m` these: torchrun's agent, which starts the workers as ranks


# The client: what the tests call.


def warm_form(argv: list[str]) -> dict | None:
    """What a warm child runs for `argv`: {"unbuffered", "script" or "module", "args"} of `python [-u] <entrypoint>
    <args>` or `python [-u] -m <one of MODULES> <args>`; None for any other command."""
    if not argv or argv[0] != sys.executable:
        return None
    unbuffered = argv[1:2] == ["-u"]
    rest = argv[1 + unbuffered :]
    if len(rest) >= 2 and rest[0] == "-m" and rest[1] in MODULES:
        return {"unbuffered": unbuffered, "module": rest[1], "args": rest[2:]}
    if rest and os.path.basename(rest[0]) in ENTRYPOINTS:
        return {"unbuffered": unbuffered, "script": rest[0], "args": rest[1:]}
    return None


def runs_warm(argv: list[str], env: dict[str, str], server_env: dict[str, str] | None = None) -> bool:
    """Whether `argv` with `env` can be a fork of the warm server (see the module's docstring), whose environment is
    `server_env` (in the tests' process: its own)."""
    server_env = os.environ if server_env is None else server_env
    if env.get(COLD) == "1" or server_env.get(COLD) == "1" or warm_form(argv) is None:
        return False
    keys = {
        key
        for key in (*env, *server_env)
        if key.startswith(IMPORT_TIME_PREFIXES) and not key.startswith(RUN_TIME_PREFIXES) and key != "PYTHONPATH"
    }
    differ = {key for key in keys if env.get(key) != server_env.get(key)}
    return not differ or (differ == {THREADS} and env.get(THREADS, "").isdigit() and int(env[THREADS]) > 0)


def popen(
    argv: list[str], cwd: str | Path, env: dict[str, str], stdout: IO, stderr: IO
) -> WarmChild | subprocess.Popen:
    """`subprocess.Popen(argv, cwd=, env=, stdout=, stderr=, start_new_session=True)`, forked warm where it can be.
    `stdout`/`stderr` are files (not pipes): a warm child writes into them directly."""
    if runs_warm(argv, env, server_environment()):
        return server().start(argv, cwd, env, stdout, stderr)
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=True, start_new_session=True)


def run(argv: list[str], cwd: str | Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`subprocess.run(argv, cwd=, env=, capture_output=True, text=True, timeout=)`, forked warm where it can be."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = popen(argv, cwd, env, out, err)
        try:
            process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, process.returncode, out.read(), err.read())


class WarmChild:
    """A forked child of the server, with the parts of Popen's interface the tests use."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.pid: int = json.loads(self._line())["pid"]
        self.returncode: int | None = None

    def _line(self) -> str:
        data = b""
        while not data.endswith(b"\n"):
            chunk = self.connection.recv(4096)
            if not chunk:
                raise RuntimeError("the warm test interpreter died (its log: hydralight.testing.warm's server stderr)")
            data += chunk
        return data.decode()

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self.connection], [], [], 0)[0]:
            self.returncode = json.loads(self._line())["returncode"]
            self.connection.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self.connection], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            self.poll()
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Server:
    """The warm interpreter of this test process, started on first use and stopped when the process exits."""

    def __init__(self) -> None:
        self.environment = dict(os.environ)  # what its libraries import under
        self.dir = Path(tempfile.mkdtemp(prefix="hydralight-warm-"))
        self.path = str(self.dir / "socket")
        self.log = open(self.dir / "server.log", "w+")  # noqa: SIM115 (open while the server lives)
        # Its own session: a Ctrl-C in the terminal stops pytest, whose exit then stops the server.
        self.process = subprocess.Popen([sys.executable, __file__, self.path], stdout=self.log, stderr=self.log,
                                        stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        atexit.register(self.stop)
        deadline = time.monotonic() + 120
        while not os.path.exists(self.path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise RuntimeError(f"the warm test interpreter did not start:\n{self.log.read()}")
            time.sleep(0.05)

    def start(self, argv: list[str], cwd: str | Path, env: dict[str, str], stdout: IO, stderr: IO) -> WarmChild:
        connection = socket.socket(socket.AF_UNIX)
        connection.connect(self.path)
        request = {**warm_form(argv), "cwd": str(cwd), "env": env}
        # The child writes straight into the caller's files: they travel with the request.
        socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], [stdout.fileno(), stderr.fileno()])
        return WarmChild(connection)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_server: Server | None = None


def server_environment() -> dict[str, str]:
    """The environment the warm server imported its libraries under (a test may have changed this process's since):
    the current one for a server not started yet."""
    running = _server is not None and _server.process.poll() is None
    return _server.environment if running else dict(os.environ)


def server() -> Server:
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = Server()
    return _server


# The server: `python hydralight.testing.warm <socket path>`.


# Lightning's launchers of DDP ranks: each starts the ranks > 0 with `subprocess.Popen`.
RANK_LAUNCHERS = (
    "lightning.fabric.strategies.launchers.subprocess_script",
    "lightning.pytorch.strategies.launchers.subprocess_script",
)
TORCHRUN_LAUNCHER = "torch.distributed.elastic.multiprocessing.subprocess_handler.subprocess_handler"  # its `Popen`
_server_env: dict[str, str] = {}  # the server's environment, as its libraries imported under it
_import_warnings = b""
_rank_launcher: socket.socket | None = None  # in a warm child: the channel to the fork that starts its ranks


def serve(path: str) -> None:
    global _import_warnings
    _server_env.update(os.environ)
    _import_warnings = import_warnings = preload()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.rename(path + ".tmp", path)  # the client waits for this name: it exists once the server accepts
    children: dict[int, socket.socket] = {}
    parent = os.getppid()
    while os.getppid() == parent:  # a test process killed outright leaves no server behind
        report_exits(children)
        if select.select([listener], [], [], 0.02)[0]:
            connection, _ = listener.accept()
            pid = fork_child(connection, listener, children, import_warnings)
            children[pid] = connection


def preload() -> bytes:
    """Import PRELOADED; what they print while importing (warnings), for every child to print again."""
    import gc
    import importlib
    import logging

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    as_after_hydra = logging.NullHandler()  # see ENTRYPOINTS
    logging.getLogger().addHandler(as_after_hydra)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            for name in PRELOADED:
                importlib.import_module(name)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            logging.getLogger().removeHandler(as_after_hydra)
        captured.seek(0)
        warnings = captured.read()
    for name in RANK_LAUNCHERS:
        importlib.import_module(name).subprocess = RankSubprocess()
    importlib.import_module(TORCHRUN_LAUNCHER).Popen = RankSubprocess.Popen
    # Out of the collector's sight: a child's exit then does not walk (and copy, page by page) the server's objects.
    gc.freeze()
    return warnings


def report_exits(children: dict[int, socket.socket]) -> None:
    """Send each child that has exited its exit code (as Popen's returncode has it) on its connection."""
    for pid, connection in list(children.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            returncode = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):  # else the test that started it is gone
                connection.sendall(json.dumps({"returncode": returncode}).encode() + b"\n")
            connection.close()
            del children[pid]


def receive(connection: socket.socket, max_fds: int) -> tuple[bytes, list[int]]:
    """One request: a line of JSON and the file descriptors sent with it; no bytes once the sender has closed."""
    data, fds, _, _ = socket.recv_fds(connection, 1 << 20, max_fds)
    while data and not data.endswith(b"\n"):
        data += connection.recv(1 << 20)
    return data, fds


def fork_child(connection: socket.socket, listener: socket.socket, children: dict, import_warnings: bytes) -> int:
    data, fds = receive(connection, 2)
    request = json.loads(data)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        return pid
    for server_socket in (listener, connection, *children.values()):
        server_socket.close()
    run_as_python(request, fds, import_warnings)


def run_as_python(request: dict, fds: list[int], import_warnings: bytes) -> None:
    """In the child: become `python [-u] <script> <args>` (or `-m <module>`, see warm_form) in the request's cwd and
    environment, and run it. Its exit (SystemExit, an uncaught exception's traceback, a signal) is the interpreter's
    own, as for a fresh `python`. `fds`: stdout and stderr (stdin is empty), or stdin, stdout and stderr. In a session
    of its own unless the request says `"session": False` (a rank Lightning starts stays in its parent's), with a
    launcher for its DDP ranks."""
    if request.get("session", True):
        os.setsid()
    start_rank_launcher(fds)
    if len(fds) == 2:
        fds = [os.open(os.devnull, os.O_RDONLY), *fds]
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        if fd != target:
            os.close(fd)
    os.chdir(request["cwd"])
    inherited = [entry for entry in sys.path[1:] if entry not in server_pythonpath()]
    os.environ.clear()
    os.environ.update(request["env"])
    reseed()
    if os.environ.get(THREADS) != _server_env.get(THREADS):  # a positive integer (runs_warm)
        sys.modules["torch"].set_num_threads(int(os.environ[THREADS]))
    if request["unbuffered"]:
        unbuffer()
    os.write(2, import_warnings)
    import importlib.util
    import runpy

    importlib.invalidate_caches()  # files written since the server started (a test's own project) are found
    extra = [os.path.abspath(entry) for entry in request["env"].get("PYTHONPATH", "").split(os.pathsep) if entry]
    if "module" in request:  # `python -m`: argv[0] is the module's file, sys.path[0] the working dir
        sys.argv = [importlib.util.find_spec(request["module"]).origin, *request["args"]]
        sys.path[:] = [os.getcwd(), *extra, *inherited]
        exit_as_python(lambda: runpy.run_module(request["module"], run_name="__main__", alter_sys=True))
    script = request["script"]
    sys.argv = [script, *request["args"]]
    sys.path[:] = [os.path.dirname(os.path.abspath(script)), *extra, *inherited]
    exit_as_python(lambda: runpy.run_path(script, run_name="__main__"))


def exit_as_python(main: Callable[[], object]) -> NoReturn:
    """Run `main`, then exit as the interpreter would: the uncaught exception's traceback (exit 1, or death by SIGINT
    for a KeyboardInterrupt), SystemExit's code, non-daemon threads joined, atexit handlers run, stdout and stderr
    flushed. But not the teardown of every module and object: in a fork that touches (and so copies) most of the
    memory it shares with the server, a few tenths of a second of CPU per child."""
    import atexit
    import threading

    interrupted = False
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    except BaseException as error:
        sys.excepthook(type(error), error, error.__traceback__)
        code, interrupted = 1, isinstance(error, KeyboardInterrupt)
    try:
        threading._shutdown()  # what Py_Finalize does first
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


def unbuffer() -> None:
    """`python -u`: stdout and stderr unbuffered."""
    import io

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        raw = open(stream.fileno(), "wb", buffering=0, closefd=False)  # noqa: SIM115 (as long as the process)
        setattr(sys, name, io.TextIOWrapper(raw, stream.encoding, stream.errors, write_through=True))


class RankSubprocess:
    """The `subprocess` module as Lightning's rank launchers see it in the server and its children (and `Popen` as
    torchrun's agent sees it): `Popen` of a rank that `runs_warm` (the same rule as for the tests' own commands) is
    forked by the child's rank launcher; anything else is subprocess's own. A rank writes where its parent does."""

    def __getattr__(self, name: str) -> object:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(args: list[str], **kwargs: object) -> WarmChild | subprocess.Popen:
        env = kwargs.get("env") or dict(os.environ)
        inherits = all(kwargs.get(name) is None for name in ("stdout", "stderr"))
        known = set(kwargs) <= {"env", "cwd", "stdout", "stderr", "start_new_session"}
        if _rank_launcher is None or not (known and inherits) or not runs_warm(list(args), env, _server_env):
            return subprocess.Popen(args, **kwargs)
        theirs, ours = socket.socketpair(socket.AF_UNIX)
        request = {
            **warm_form(list(args)), "cwd": str(kwargs.get("cwd") or os.getcwd()), "env": env,
            "session": bool(kwargs.get("start_new_session")),
        }  # fmt: skip
        socket.send_fds(_rank_launcher, [json.dumps(request).encode() + b"\n"], [theirs.fileno(), 0, 1, 2])
        theirs.close()
        return WarmChild(ours)


def start_rank_launcher(child_fds: list[int]) -> None:
    """Fork the process that starts this child's DDP ranks, while this child is still the server's clean copy: a
    rank forked from it is what a fresh `python` would be, and lives in this child's session and process group."""
    global _rank_launcher
    ours, theirs = socket.socketpair(socket.AF_UNIX)
    if os.fork():
        theirs.close()
        _rank_launcher = ours
        return
    ours.close()
    for fd in child_fds:  # the child's output files: each rank gets the ones its parent has when it starts it
        os.close(fd)
    launch_ranks(theirs)  # a rank forked in there exits as the interpreter does, through here (see fork_child)
    os._exit(0)


def launch_ranks(channel: socket.socket) -> None:
    """The rank launcher's loop: fork a rank for each request, report its pid and exit code on the connection that
    came with it (a WarmChild's), until the child that owns it is gone (its end of `channel` closes)."""
    ranks: dict[int, socket.socket] = {}
    while True:
        ready = select.select([channel], [], [], 0.02 if ranks else None)[0]
        report_exits(ranks)
        if not ready:
            continue
        data, fds = receive(channel, 4)
        if not data:
            return
        connection = socket.socket(fileno=fds[0])
        pid = os.fork()
        if pid == 0:
            for open_socket in (channel, connection, *ranks.values()):
                open_socket.close()
            run_as_python(json.loads(data), fds[1:], _import_warnings)
        for fd in fds[1:]:
            os.close(fd)
        connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        ranks[pid] = connection


def server_pythonpath() -> list[str]:
    return [os.path.abspath(entry) for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]


def reseed() -> None:
    """A fresh interpreter seeds Python's and NumPy's global generators from the OS; a fork would share the server's."""
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


if __name__ == "__main__":
    serve(sys.argv[1])
