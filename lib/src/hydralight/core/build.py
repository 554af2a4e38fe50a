"""Builds what train and eval share from the composed config: data, callbacks, loggers, strategy, trainer, and the
process-wide torch settings it asks for (threads, matmul precision, keeping freed memory).

`keep_freed_memory` stops glibc from handing freed memory back to the OS after every training step, and faulting it
back in. A training step frees and re-allocates the same few MB of activations and gradients each time. Whether glibc's
malloc keeps them (heap) or returns them (munmap, heap trimming) depends on the process's allocation history: a
hydralight run on 60,000 MNIST-sized images was measured taking ~5 million page faults and ~40% longer per epoch
than a plain loop doing the same arithmetic (benchmarks/README.md). Fixed thresholds make it keep them.
"""

import ctypes
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from lightning.pytorch import Callback, LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from hydralight.core.callbacks.reports import MetricsJson
from hydralight.core.console import info
from hydralight.core.errors import UserError
from hydralight.core.runs.checkpoints import checkpoint_plugins
from hydralight.core.runs.provenance import git_state, record_what_ran
from hydralight.core.validation import check_devices, instantiate  # Hydra's; a constructor's complaint names the key

log = logging.getLogger(__name__)

# Lightning's own warning, replaced by one line of ours that says what the run really uses.
_FP16_ON_CPU_WARNING = r".*AMP with fp16 is not supported on CPU.*"
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


def build_datamodule(cfg: DictConfig) -> LightningDataModule:
    info("Data: %s", cfg._target_)
    return instantiate(cfg, _convert_="all")


def build_loggers(cfg: DictConfig | None) -> list[Logger]:
    loggers = []
    for name, entry in (cfg or {}).items():
        if not entry:
            continue
        try:
            loggers.append(instantiate(entry))
        except InstantiationException as error:
            if not isinstance(error.__cause__, ImportError):
                raise
            raise UserError(
                f"logger {name!r} needs a package that is not installed ({error.__cause__}): "
                "pip install -e '.[loggers]'"
            ) from error
    info("Loggers: %s", ", ".join(type(logger).__name__ for logger in loggers) or "none")
    return loggers


def build_callbacks(
    cfg: DictConfig | None, output_dir: str | Path, has_logger: bool, monitor: str | None = None
) -> list[Callback]:
    """The configured callbacks plus MetricsJson, which the metrics.json contract needs whatever the config says."""
    callbacks = [instantiate(entry) for entry in (cfg or {}).values() if entry]
    if not has_logger and any(isinstance(callback, LearningRateMonitor) for callback in callbacks):
        info("No logger configured: dropping LearningRateMonitor (it has nowhere to write).")
        callbacks = [callback for callback in callbacks if not isinstance(callback, LearningRateMonitor)]
    callbacks.append(MetricsJson(Path(output_dir) / "metrics.json", monitor))
    info("Callbacks: %s", ", ".join(type(callback).__name__ for callback in callbacks))
    return callbacks


def loaded_instance(value: object, module: str, name: str) -> bool:
    """`isinstance(value, module.name)` for a class imported only by the runs that use it (a strategy, a checkpoint
    writer): when its module was never imported, nothing is one."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(value, getattr(loaded, name))


def build_strategy(cfg: DictConfig) -> Strategy | str:
    """`strategy=auto` is Lightning's own choice; every other option instantiates a Strategy."""
    if "_target_" not in cfg:
        return cfg.get("name", "auto")
    return instantiate(cfg, _convert_="all")


def build_trainer(cfg: DictConfig, callbacks: list[Callback], loggers: list[Logger]) -> Trainer:
    """The Trainer from the trainer group, the strategy group, callbacks and loggers; flag errors are UserErrors."""
    configure_torch(cfg)
    strategy = build_strategy(cfg.strategy)
    one_process = loaded_instance(strategy, "hydralight.core.strategies.dp", "DataParallelStrategy")
    check_devices(cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("devices"), one_process=one_process)
    if "WORLD_SIZE" in os.environ:  # a launcher started the processes (torchrun, srun)
        from hydralight.core.switch_checks import check_world_size

        check_world_size(cfg.trainer.get("num_nodes"), cfg.trainer.get("devices"))
    if loaded_instance(strategy, "hydralight.core.strategies.sharded", "ShardedStrategy"):
        strategy.check_settings(cfg.trainer.get("devices"), cfg.trainer.get("num_nodes") or 1)
    if cfg.trainer.get("sync_batchnorm") and not torch.cuda.is_available():
        raise UserError("trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm); this machine has none.")
    plugins = {"plugins": checkpoint_plugins(cfg, strategy)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FP16_ON_CPU_WARNING)
        try:
            trainer = instantiate(
                cfg.trainer, strategy=strategy, callbacks=callbacks, logger=loggers or False, **plugins, _convert_="all"
            )
        except InstantiationException as error:
            # Hydra wraps the Trainer's own complaint about its flags; that complaint is the user's to read.
            if isinstance(error.__cause__, MisconfigurationException | ValueError):
                raise UserError(f"the trainer settings are not valid here: {error.__cause__}") from error
            raise
    if str(cfg.precision) in ("16-mixed", "16") and trainer.precision == "bf16-mixed" and rank_zero_only.rank == 0:
        log.warning(
            "precision=16-mixed: no CUDA device, and CPUs have no fp16 autocast, "
            "so this run uses precision=bf16-mixed (bfloat16 autocast, no GradScaler)."
        )
    record_what_ran(trainer.default_root_dir, trainer_settings(trainer), cfg)
    info("Trainer: %s", describe_trainer(trainer))
    return trainer


def trainer_settings(trainer: Trainer) -> dict[str, Any]:
    """The switches as the Trainer applies them (16-mixed becomes bf16-mixed on a CPU, 16 becomes 16-mixed)."""
    algorithm = trainer.gradient_clip_algorithm
    return {
        "trainer.precision": str(trainer.precision),
        "trainer.accumulate_grad_batches": trainer.accumulate_grad_batches,
        "trainer.gradient_clip_val": trainer.gradient_clip_val,
        "trainer.gradient_clip_algorithm": getattr(algorithm, "value", algorithm),
    }


def describe_trainer(trainer: Trainer) -> str:
    """What this run really uses, in the switches' own words."""
    devices = f"{trainer.num_devices} x {trainer.strategy.root_device.type}"
    if trainer.num_nodes > 1:
        devices += f" on each of {trainer.num_nodes} nodes"
    settings = trainer_settings(trainer)
    clip = settings["trainer.gradient_clip_val"]
    clipping = "null" if clip is None else f"{clip} ({settings['trainer.gradient_clip_algorithm']})"
    io = trainer.strategy.checkpoint_io
    background = loaded_instance(io, "hydralight.core.runs.async_checkpoint", "BackgroundCheckpointIO")
    return (
        f"strategy={type(trainer.strategy).__name__} ({devices}), precision={settings['trainer.precision']}, "
        f"accumulate_grad_batches={settings['trainer.accumulate_grad_batches']}, gradient_clip_val={clipping}"
        + (", async_checkpoint=true (checkpoints written by a background thread)" if background else "")
    )


def log_hyperparameters(loggers: list[Logger], cfg: DictConfig) -> None:
    """Send the whole resolved config and the git commit to every logger: a run's logs say exactly how it was made."""
    if not loggers:
        return
    config = OmegaConf.to_container(cfg, resolve=True)
    config["git"] = git_state(cfg.get("paths", {}).get("root_dir") or Path.cwd())
    for logger in loggers:
        logger.log_hyperparams(config)


def close_run() -> None:
    """What Lightning leaves open after a run: a W&B run (the next job of a sweep in this process would log into it)
    and the process group, whose gloo threads, still alive at interpreter exit, can abort a rank (SIGABRT)."""
    wandb = sys.modules.get("wandb")  # only if some logger imported it
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank tears down while another still talks to it
        torch.distributed.destroy_process_group()
