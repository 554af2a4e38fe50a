"""What a default run loads of the library: a budget of hydralight modules (issue "A template you can own").

A default `python train.py` should load only what every run needs, so that a newcomer follows it in one sitting. Each
switch's machinery (the sweep callbacks, the dp and sharded strategies, async checkpoints, `--help`, predict's input
files, the text of a refused constructor, ...) is imported only by the runs that use it. This test fails when a change
makes a default run load more of the library than the budget, in modules or in lines: import the new code where its
feature is used (a lazy import inside a function, a `_target_` string, a lazy `__getattr__` as hydralight.core.callbacks
has), or raise the budget if every run really needs it.

The run is a fresh interpreter (not the warm fork server of hydralight.testing.warm, which has the library imported
already), training the testing project's regression task; its modules (hydralight.testing) stand for a project's own
package and are not counted. The modules are read from `sys.modules` at exit: `-X importtime` misses every module
imported through `importlib.import_module`, which Hydra's `instantiate` and the lazy `__getattr__`s use.
"""

import json
import subprocess
import sys

import pytest

from hydralight.testing import write_project

# What a default run may import of hydralight (hydralight.testing aside): what it imports now, and a small margin.
MODULE_BUDGET = 25
LINE_BUDGET = 3550  # the lines of those modules: today about 3,460

# Runs `train.py <args>` as `python train.py <args>` would, then prints the library's modules and their lines.
REPORT = """
import atexit, json, runpy, sys

def report():
    rows = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if name.split(".")[0] == "hydralight" and not name.startswith("hydralight.testing") and path.endswith(".py"):
            with open(path, encoding="utf-8") as file:
                rows[name] = sum(1 for _ in file)
    print("IMPORTED " + json.dumps(rows), file=sys.stderr)

atexit.register(report)
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.mark.slow
def test_a_default_run_imports_at_most_the_budget_of_library_modules_and_lines(tmp_path):
    project = write_project(tmp_path / "project")
    args = ("trainer.max_epochs=1", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'run'}")
    result = subprocess.run(
        [sys.executable, "-c", REPORT, *args], cwd=project, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"exit {result.returncode}\n--- stderr ---\n{result.stderr[-6000:]}"
    report = next(line for line in result.stderr.splitlines() if line.startswith("IMPORTED "))
    modules = json.loads(report.removeprefix("IMPORTED "))
    listed = "\n".join(f"{lines:6d}  {name}" for name, lines in sorted(modules.items()))
    lines = sum(modules.values())
    assert len(modules) <= MODULE_BUDGET and lines <= LINE_BUDGET, (
        f"a default run imports {len(modules)} hydralight modules ({lines} lines), more than the budget of "
        f"{MODULE_BUDGET} modules and {LINE_BUDGET} lines:\n{listed}"
    )
