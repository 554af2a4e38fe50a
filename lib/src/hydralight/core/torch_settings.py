"""The process-wide torch settings a config asks for (threads, matmul precision, keeping freed memory), and whether
torch.compile really wraps the model.

`keep_freed_memory` stops glibc from handing freed memory back to the OS after every training step, and faulting it
back in. A training step frees and re-allocates the same few MB of activations and gradients each time. Whether glibc's
malloc keeps them (heap) or returns them (munmap, heap trimming) depends on the process's allocation history: a
hydralight run on 60,000 MNIST-sized images was measured taking ~5 million page faults and ~40% longer per epoch
than a plain loop doing the same arithmetic (benchmarks/README.md). Fixed thresholds make it keep them.
"""

import ctypes
import os
import sys

import torch
from omegaconf import DictConfig

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's own upper bound for the threshold it adapts by itself (64-bit)
TRIM_THRESHOLD = 256 * 2**20  # keep up to this much free memory at the top of the heap


def keep_freed_memory() -> bool:
    """Blocks below 32 MiB come from the heap and up to 256 MiB of free heap is kept; True if applied (glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: leave it alone
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def configure_torch(cfg: DictConfig) -> None:
    """The process-wide performance settings of the config (README "Performance" has their measured effect)."""
    threads = cfg.get("cpu_threads")
    if threads is not None:
        torch.set_num_threads(threads)
        # Lightning's DDP launchers set their own thread count unless this is set; re-launched ranks inherit it.
        os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "highest"))
    if cfg.get("keep_freed_memory", False):
        keep_freed_memory()


def compiled_state(model: torch.nn.Module) -> str:
    """Whether torch.compile really wraps any part of the model (model.compile=true compiles the net), and which."""
    compiled = [
        name or "the whole model"
        for name, module in model.named_modules()
        if getattr(module, "_compiled_call_impl", None) is not None  # set by nn.Module.compile()
        or hasattr(module, "_orig_mod")  # what torch.compile(module) returns
    ]
    return f"compiled ({', '.join(compiled)})" if compiled else "not compiled"
