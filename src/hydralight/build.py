"""Builds what train and eval share from the composed config: data, callbacks, loggers, strategy, trainer."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch import Callback, LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies import FSDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from hydralight.allocator import keep_freed_memory
from hydralight.callbacks import MetricsJson
from hydralight.errors import UserError

log = logging.getLogger(__name__)

# Lightning's own warning, replaced by one line of ours that says what the run really uses.
_FP16_ON_CPU_WARNING = r".*AMP with fp16 is not supported on CPU.*"


def quiet_console() -> None:
    """One line per message, and no noise a user can do nothing about."""
    # `import lightning` adds its own console handler; Hydra's handlers already print and write the run's log.
    lightning_logger = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)
    # Lightning 2.6 calls a torch API that torch 2.13 deprecates, once per step: Lightning's to fix, not the user's.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # The run-dir guard (runs.py) already refuses a dir with checkpoints unless this run continues them.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _no_advert not in rank_zero_logger.filters:
        rank_zero_logger.addFilter(_no_advert)


def _no_advert(record: logging.LogRecord) -> bool:
    """Drops Lightning's "Tip: try installing litlogger" line, printed by every Trainer."""
    return not str(record.msg).startswith("💡 Tip")


def info(message: str, *args: Any) -> None:
    """Log once per run, not once per DDP rank."""
    if rank_zero_only.rank == 0:
        log.info(message, *args)


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


def build_callbacks(cfg: DictConfig | None, output_dir: str | Path, has_logger: bool) -> list[Callback]:
    """The configured callbacks plus MetricsJson, which the metrics.json contract needs whatever the config says."""
    callbacks = [instantiate(entry) for entry in (cfg or {}).values() if entry]
    if not has_logger and any(isinstance(callback, LearningRateMonitor) for callback in callbacks):
        info("No logger configured: dropping LearningRateMonitor (it has nowhere to write).")
        callbacks = [callback for callback in callbacks if not isinstance(callback, LearningRateMonitor)]
    callbacks.append(MetricsJson(Path(output_dir) / "metrics.json"))
    info("Callbacks: %s", ", ".join(type(callback).__name__ for callback in callbacks))
    return callbacks


def build_strategy(cfg: DictConfig) -> Strategy | str:
    """`strategy=auto` is Lightning's own choice; every other option instantiates a Strategy."""
    if "_target_" not in cfg:
        return cfg.get("name", "auto")
    strategy = instantiate(cfg, _convert_="all")
    if isinstance(strategy, FSDPStrategy) and not torch.cuda.is_available():
        raise UserError(
            "strategy=fsdp needs CUDA GPUs, and this machine has none. "
            "On CPU use strategy=ddp (with trainer.devices=N) or strategy=auto."
        )
    return strategy


def check_devices(accelerator: object, devices: object) -> None:
    """What Lightning reports late or not at all: a GPU accelerator without a GPU, more CPU processes than cores."""
    has_gpu = torch.cuda.is_available() or (accelerator == "gpu" and torch.backends.mps.is_available())
    if accelerator in ("gpu", "cuda") and not has_gpu:
        raise UserError(
            f"trainer.accelerator={accelerator!r}: this machine has no GPU. "
            "Choose one of: cpu, auto (auto uses a GPU when there is one)."
        )
    cores = os.cpu_count() or 1
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not has_gpu)
    if on_cpu and isinstance(devices, int) and devices > cores:
        raise UserError(
            f"trainer.devices={devices} is more than this machine's {cores} CPU cores (one process each). "
            f"Use trainer.devices <= {cores}."
        )


def check_world_size(num_nodes: object, devices: object) -> None:
    """Under torchrun or srun the launcher fixed the number of processes; the config has to agree with it."""
    world_size = os.environ.get("WORLD_SIZE")
    if not world_size or not isinstance(devices, int) or not isinstance(num_nodes, int) or devices < 1:
        return
    if num_nodes * devices != int(world_size):
        raise UserError(
            f"trainer.num_nodes={num_nodes} x trainer.devices={devices} = {num_nodes * devices} processes, but the "
            f"launcher started {world_size} (torchrun: --nnodes x --nproc_per_node; SLURM: nodes x tasks per node). "
            "Make them equal, e.g. trainer.num_nodes=<nodes> trainer.devices=<processes per node>."
        )


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


def build_trainer(cfg: DictConfig, callbacks: list[Callback], loggers: list[Logger]) -> Trainer:
    """The Trainer from conf/trainer with the strategy group, callbacks and loggers; flag errors become UserErrors."""
    configure_torch(cfg)
    check_devices(cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("devices"))
    check_world_size(cfg.trainer.get("num_nodes"), cfg.trainer.get("devices"))
    if cfg.trainer.get("sync_batchnorm") and not torch.cuda.is_available():
        raise UserError("trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm); this machine has none.")
    strategy = build_strategy(cfg.strategy)
    info("Trainer: strategy=%s precision=%s", type(strategy).__name__ if strategy != "auto" else "auto",
         cfg.precision)  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FP16_ON_CPU_WARNING)
        try:
            trainer = instantiate(
                cfg.trainer, strategy=strategy, callbacks=callbacks, logger=loggers or False, _convert_="all"
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
    return trainer


def git_state(directory: str | Path) -> dict[str, Any]:
    """The commit checked out in `directory` and whether tracked files differ from it; None for both outside git."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=True)
        return result.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, no commit yet
        return {"commit": None, "dirty": None}


def log_hyperparameters(loggers: list[Logger], cfg: DictConfig) -> None:
    """Send the whole resolved config and the git commit to every logger: a run's logs say exactly how it was made."""
    if not loggers:
        return
    config = OmegaConf.to_container(cfg, resolve=True)
    config["git"] = git_state(cfg.get("paths", {}).get("root_dir") or Path.cwd())
    for logger in loggers:
        logger.log_hyperparams(config)


def close_loggers() -> None:
    """Lightning leaves a W&B run open; the next job of a sweep in this process would log into it."""
    wandb = sys.modules.get("wandb")  # only if some logger imported it
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
