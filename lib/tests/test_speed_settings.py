"""The speed switches of train.yaml (README "Performance"): each one reaches torch or the C allocator (set by
hydralight.core.build when it builds the Trainer)."""

import platform
import sys

import pytest
import torch

from hydralight.core import build
from hydralight.core.build import build_trainer


@pytest.fixture
def restore_matmul_precision():
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("precision", ["highest", "high", "medium"])
def test_matmul_precision_reaches_torch_when_the_trainer_is_built(make_cfg, restore_matmul_precision, precision):
    torch.set_float32_matmul_precision("highest" if precision != "highest" else "medium")
    build_trainer(make_cfg(f"float32_matmul_precision={precision}"), callbacks=[], loggers=[])
    assert torch.get_float32_matmul_precision() == precision


def test_cpu_threads_sets_torch_and_what_ddp_ranks_inherit(make_cfg, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # restored after the test, as is the thread count below
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    build_trainer(make_cfg("cpu_threads=1"), callbacks=[], loggers=[])
    assert calls == [1] and build.os.environ["OMP_NUM_THREADS"] == "1"


def test_cpu_threads_null_leaves_torch_alone(make_cfg, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    build_trainer(make_cfg(), callbacks=[], loggers=[])
    assert calls == []


@pytest.mark.parametrize("keep", [True, False])
def test_keep_freed_memory_switch_sets_the_allocator_or_leaves_it(make_cfg, monkeypatch, keep):
    calls = []
    monkeypatch.setattr(build, "keep_freed_memory", lambda: calls.append("mallopt") or True)
    build_trainer(make_cfg(f"keep_freed_memory={str(keep).lower()}"), callbacks=[], loggers=[])
    assert calls == (["mallopt"] if keep else [])


def test_keep_freed_memory_applies_on_glibc_and_is_idempotent():
    applied = build.keep_freed_memory()
    assert isinstance(applied, bool)
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert applied and build.keep_freed_memory()


def test_keep_freed_memory_is_a_no_op_off_linux(monkeypatch):
    monkeypatch.setattr(build.sys, "platform", "darwin")
    assert build.keep_freed_memory() is False
