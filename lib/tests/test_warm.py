"""The warm test interpreter (hydralight.testing.warm): a forked child runs an entrypoint as a fresh `python` would,
and every command it could run differently runs cold."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from hydralight.testing import warm

# What an entrypoint can see of the interpreter it runs in. It sets up logging before importing Lightning, as Hydra
# does in the CLI, so Lightning's loggers are configured by that state.
PROBE = """
import json, logging, os, random, sys
logging.basicConfig()
import lightning.pytorch
from my_module import VALUE
logger = logging.getLogger("lightning.pytorch")
print(json.dumps({
    "argv": sys.argv, "cwd": os.getcwd(), "name": __name__, "path0": sys.path[0], "value": VALUE,
    "variable": os.environ.get("PROBE_VARIABLE"), "stdin": sys.stdin.read(), "session": os.getsid(0) == os.getpid(),
    "lightning_log": [logger.propagate, len(logger.handlers)], "random": random.random(),
}))
if len(sys.argv) > 1:
    exec(sys.argv[1])
"""


# Code that ends a script, the exit code a fresh `python` then has, and what its stderr shows.
PYTHON_EXITS = [
    ("raise SystemExit(3)", 3, ""),
    ("raise ValueError('boom')", 1, "ValueError: boom"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -signal.SIGTERM, ""),
]


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    """The probe as an entrypoint (named train.py) in a project dir; the module it imports lies in another dir."""
    (tmp_path / "project").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "my_module.py").write_text("VALUE = 7\n")
    (tmp_path / "project" / "train.py").write_text(PROBE)
    return tmp_path / "project" / "train.py"


def run_probe(probe: Path, *args: str, **env: str) -> tuple[int, dict, str]:
    env = {**os.environ, "PYTHONPATH": str(probe.parents[1] / "lib"), "PROBE_VARIABLE": "set", **env}
    result = warm.run([sys.executable, str(probe), *args], probe.parents[1], env, timeout=120)
    first_line = result.stdout.splitlines()[0] if result.stdout else "{}"
    return result.returncode, json.loads(first_line), result.stderr


@pytest.mark.slow  # a fresh python to compare with
def test_a_warm_child_sees_what_a_fresh_python_sees(probe, monkeypatch):
    """argv, cwd, environment, `__main__`, sys.path (script dir, then PYTHONPATH), an empty stdin, a session of its
    own and Lightning's loggers: the same in a fork of the warm server and in a fresh `python`. Only the global
    random state differs, between every two runs."""
    assert warm.runs_warm([sys.executable, str(probe)], dict(os.environ))
    warm_code, warm_seen, _ = run_probe(probe)
    _, again, _ = run_probe(probe)
    monkeypatch.setenv(warm.COLD, "1")
    cold_code, cold_seen, _ = run_probe(probe)

    assert warm_code == cold_code == 0
    assert warm_seen.pop("random") != again.pop("random") != cold_seen.pop("random")
    assert warm_seen == cold_seen == again
    assert warm_seen["path0"] == str(probe.parent) and warm_seen["value"] == 7 and warm_seen["name"] == "__main__"
    assert warm_seen["lightning_log"] == [True, 0]  # no handler of its own: its records reach Hydra's job log


@pytest.mark.parametrize(("code", "returncode", "stderr"), PYTHON_EXITS)
def test_a_warm_child_exits_as_python_does(probe, code, returncode, stderr):
    """sys.exit's code, an uncaught exception's traceback and exit 1, death by a signal."""
    exit_code, _, err = run_probe(probe, code)
    assert exit_code == returncode
    assert stderr in err and ("Traceback" in err) == bool(stderr)


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["-c", "print(1)"], {}),
        (["benchmarks/bench.py"], {}),
        (["train.py"], {"MKL_NUM_THREADS": "7"}),
        (["train.py"], {"OMP_NUM_THREADS": "all"}),
        (["-m", "torch.utils.collect_env"], {}),
        (["train.py"], {"PYTHONWARNINGS": "error"}),
        (["train.py"], {"CUDA_VISIBLE_DEVICES": "1"}),
    ],
)
def test_what_a_fork_could_run_differently_runs_cold(argv, env):
    """Not an entrypoint, or a variable read while torch and Lightning import differs from the server's."""
    assert not warm.runs_warm([sys.executable, *argv], {**os.environ, **env})


def test_cold_runs_everything_cold(monkeypatch):
    monkeypatch.setenv(warm.COLD, "1")
    assert not warm.runs_warm([sys.executable, "train.py"], dict(os.environ))


# An entrypoint that starts itself again as a DDP rank, through the `subprocess` of Lightning's launcher module.
RANK_PROBE = """
import sys
PRELOADED = "torch" in sys.modules  # a fresh `python` has imported nothing yet
import json, os
if sys.argv[1] == "rank":
    print(json.dumps({
        "argv": sys.argv, "cwd": os.getcwd(), "rank": os.environ.get("LOCAL_RANK"), "preloaded": PRELOADED,
        "same_group": os.getpgid(0) == int(os.environ["PARENT_GROUP"]), "path0": sys.path[0], "name": __name__,
    }), flush=True)
    exec(sys.argv[2])
else:
    from lightning.pytorch.strategies.launchers import subprocess_script as launcher
    env = {**os.environ, "LOCAL_RANK": "1", "PARENT_GROUP": str(os.getpgid(0))}
    rank = launcher.subprocess.Popen([sys.executable, os.path.abspath(__file__), "rank", sys.argv[1]], env=env,
                                     cwd=os.getcwd())
    print(json.dumps({"returncode": rank.wait(timeout=60), "polled": rank.poll()}), flush=True)
"""


def run_rank_probe(script: Path, code: str) -> tuple[dict, dict, str]:
    """What the rank saw, what its parent's Popen reported, and the output's stderr."""
    result = warm.run([sys.executable, str(script), code], script.parent, dict(os.environ), timeout=120)
    assert result.returncode == 0, result.stderr
    rank, parent = (json.loads(line) for line in result.stdout.splitlines() if line.startswith("{"))
    return rank, parent, result.stderr


@pytest.mark.slow  # a fresh python to compare with
def test_a_rank_a_warm_child_starts_is_warm_and_sees_what_a_fresh_python_rank_sees(tmp_path, monkeypatch):
    """Lightning's launcher starts rank 1 with `subprocess.Popen([python, <entrypoint>, ...], env=, cwd=)`: from a
    warm child it is a fork with the libraries already imported, which sees the same argv, cwd, environment, process
    group, `__main__` and sys.path as the fresh `python` a cold run starts."""
    script = tmp_path / "train.py"
    script.write_text(RANK_PROBE)
    warm_rank, warm_parent, _ = run_rank_probe(script, "pass")
    monkeypatch.setenv(warm.COLD, "1")
    cold_rank, cold_parent, _ = run_rank_probe(script, "pass")
    assert warm_parent == cold_parent == {"returncode": 0, "polled": 0}
    assert warm_rank.pop("preloaded") and not cold_rank.pop("preloaded")
    assert warm_rank == cold_rank
    assert warm_rank["same_group"] and warm_rank["rank"] == "1" and warm_rank["name"] == "__main__"
    assert warm_rank["argv"] == [str(script), "rank", "pass"] and warm_rank["path0"] == str(tmp_path)


@pytest.mark.parametrize(("code", "returncode", "stderr"), PYTHON_EXITS)
def test_a_warm_rank_exits_as_python_does(tmp_path, code, returncode, stderr):
    """Its parent's Popen sees sys.exit's code, an uncaught exception's traceback and exit 1, death by a signal."""
    script = tmp_path / "train.py"
    script.write_text(RANK_PROBE)
    rank, parent, err = run_rank_probe(script, code)
    assert rank["preloaded"] and parent == {"returncode": returncode, "polled": returncode}
    assert stderr in err and ("Traceback" in err) == bool(stderr)


# An entrypoint as torchrun's workers run it, printing what it sees.
TORCHRUN_PROBE = """
import sys
PRELOADED = "torch" in sys.modules
import json, os, torch
print(json.dumps({
    "argv": sys.argv, "cwd": os.getcwd(), "name": __name__, "path0": sys.path[0], "preloaded": PRELOADED,
    "rank": os.environ["LOCAL_RANK"], "world": os.environ["WORLD_SIZE"], "omp": os.environ.get("OMP_NUM_THREADS"),
    "threads": torch.get_num_threads(), "session": os.getsid(0) == os.getpid(),
    "unbuffered": [sys.stdout.write_through, type(sys.stdout.buffer).__name__],
}), flush=True)
"""


@pytest.mark.slow  # a fresh python to compare with
def test_torchrun_workers_of_a_warm_agent_are_warm_and_see_what_fresh_workers_see(tmp_path, monkeypatch):
    """`python -m torch.distributed.run` runs warm, and the workers its agent starts (`python -u <script>`, each in a
    session of its own, with OMP_NUM_THREADS=1 unless set) are forks that see the argv, cwd, environment, thread
    count, session, `__main__`, sys.path and unbuffered output of the fresh workers of a cold run."""
    script = tmp_path / "train.py"
    script.write_text(TORCHRUN_PROBE)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), "x"]
    env = dict(os.environ)
    seen = {}
    for mode in ("warm", "cold"):
        if mode == "cold":
            env[warm.COLD] = "1"
        assert warm.runs_warm(argv, env) == (mode == "warm")
        result = warm.run(argv, tmp_path, env, timeout=120)
        assert result.returncode == 0, result.stderr
        workers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        seen[mode] = sorted(workers, key=lambda worker: worker["rank"])
    assert all(worker.pop("preloaded") for worker in seen["warm"])
    assert not any(worker.pop("preloaded") for worker in seen["cold"])
    assert seen["warm"] == seen["cold"]
    assert [worker["rank"] for worker in seen["warm"]] == ["0", "1"]
    assert seen["warm"][0]["threads"] == 1 and seen["warm"][0]["session"] and seen["warm"][0]["name"] == "__main__"
