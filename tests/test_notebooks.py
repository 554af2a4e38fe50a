"""The notebooks in notebooks/: stored without outputs, and each one runs top to bottom on a tiny finished run."""

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, assert_ok, run_cli

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_are_there():
    """Explore the data, inspect a run, use the model: the three notebooks the README points to."""
    assert [path.name for path in NOTEBOOKS] == ["01_explore_data.ipynb", "02_inspect_run.ipynb", "03_inference.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_stored_without_outputs(path):
    """No outputs, execution counts or widget state in git: diffs stay readable (pre-commit's nbstripout fixes it)."""
    notebook = json.loads(path.read_text())
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name} cell {index} has outputs: run `pre-commit run nbstripout`"
            assert cell["execution_count"] is None, f"{path.name} cell {index} has an execution count"
    assert "widgets" not in notebook["metadata"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny run of the real command line with pictures (callbacks=plots): what a user has after `python train.py`."""
    pytest.importorskip("matplotlib")
    run_dir = tmp_path_factory.mktemp("notebooks") / "run"
    assert_ok(run_cli("train.py", *TINY, "callbacks=plots", "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"))
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_on_a_tiny_finished_run(path, finished_run, monkeypatch):
    """Each notebook executes without error in a real kernel, pointed at the run by HYDRALIGHT_RUN_DIR, and shows
    at least one picture."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("HYDRALIGHT_RUN_DIR", str(finished_run))  # the kernel inherits this process's environment
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError with the failing cell and its traceback
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in outputs), "no picture was drawn"
    assert not any(output.output_type == "error" for output in outputs)
