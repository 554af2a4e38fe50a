"""The suite's pytest plugin, for the library's tests and a project's alike (pyproject: `addopts = "-p
hydralight.testing.plugin"`): its markers, torch threads shared out among xdist workers, slow modules handed out
first, and `gpu` tests skipped without CUDA."""

import os

import pytest

MARKERS = (
    "slow: takes more than a few seconds (CI still runs it)",
    "gpu: needs one or more CUDA GPUs (skipped without)",
    "sweeps: Hydra multirun sweeps as subprocesses (Optuna/joblib ones skip without the sweeps extra)",
)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker and every process it starts get their share of the cores as torch threads.
    torch's default of one thread per core in every process oversubscribes the cores as soon as two workers train at
    once, and its spinning threads then make the whole suite slower by a third or more. An OMP_NUM_THREADS you set
    yourself is kept."""
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))
        import torch

        torch.set_num_threads(int(threads))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The modules with a slow test first, each whole and in its order: pytest-xdist hands a worker a module (or a
    class) at a time in this order (`--no-loadscope-reorder`), and the quick ones then fill the end evenly, where a
    long module handed out last would leave the other workers idle until it ends. Then: `gpu` tests skip without
    CUDA."""
    with_slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in with_slow)
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
