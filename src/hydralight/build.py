"""Builds what train and eval share from the composed config: data, callbacks, loggers, strategy, trainer."""

import inspect
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object
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
from hydralight.saved_config import record_what_ran
from hydralight.strategies import DataParallelStrategy
from hydralight.targets import instantiate  # Hydra's; a constructor's complaint names the config key

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
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector"):
        if _no_noise not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_no_noise)


# Lines Lightning prints that tell the user nothing: its advert ("Tip: try installing litlogger"), that the configured
# model summary replaces its default one, that a machine without TPUs has none, the checkpoint a stage loads (twice),
# right after the project's own "Resuming from <path>" or "Testing <path>", and how the lr and batch-size finders
# reload their temporary checkpoints (this project's own loads all pass weights_only).
_NOISE = (
    "💡 Tip",
    "Trainer already configured with model summary callbacks",
    "TPU available: False",
    "Restoring states from the checkpoint path at ",
    "Loaded model weights from the checkpoint at ",
    "`weights_only` was not set, defaulting to `False`",
)
_FINDER_CHECKPOINTS = ("/.lr_find_", "/.scale_batch_size_")


def _no_noise(record: logging.LogRecord) -> bool:
    message = str(record.msg)
    return not message.startswith(_NOISE) and not any(name in message for name in _FINDER_CHECKPOINTS)


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


def check_devices(accelerator: object, devices: object, one_process: bool = False) -> None:
    """What Lightning reports late or not at all: a GPU accelerator without a GPU, more CPU processes than cores
    (`one_process`: the strategy starts none, as strategy=dp, which runs on one device without CUDA)."""
    has_gpu = torch.cuda.is_available() or (accelerator == "gpu" and torch.backends.mps.is_available())
    if accelerator in ("gpu", "cuda") and not has_gpu:
        raise UserError(
            f"trainer.accelerator={accelerator!r}: this machine has no GPU. "
            "Choose one of: cpu, auto (auto uses a GPU when there is one)."
        )
    cores = os.cpu_count() or 1
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not has_gpu)
    if on_cpu and devices == -1:
        raise UserError(
            "trainer.devices=-1 means all GPUs, and this run has none. On a CPU each device is a process of its own: "
            f"give their number, from 1 (the default) to {cores} (this machine's cores)."
        )
    if on_cpu and not one_process and isinstance(devices, int) and devices > cores:
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
    strategy = build_strategy(cfg.strategy)
    one_process = isinstance(strategy, DataParallelStrategy)
    check_devices(cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("devices"), one_process=one_process)
    check_world_size(cfg.trainer.get("num_nodes"), cfg.trainer.get("devices"))
    if cfg.trainer.get("sync_batchnorm") and not torch.cuda.is_available():
        raise UserError("trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm); this machine has none.")
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
    return (
        f"strategy={type(trainer.strategy).__name__} ({devices}), precision={settings['trainer.precision']}, "
        f"accumulate_grad_batches={settings['trainer.accumulate_grad_batches']}, gradient_clip_val={clipping}"
    )


def compiled_state(model: torch.nn.Module) -> str:
    """Whether torch.compile really wraps any part of the model (model.compile=true compiles the net), and which."""
    compiled = [
        name or "the whole model"
        for name, module in model.named_modules()
        if getattr(module, "_compiled_call_impl", None) is not None  # set by nn.Module.compile()
        or hasattr(module, "_orig_mod")  # what torch.compile(module) returns
    ]
    return f"compiled ({', '.join(compiled)})" if compiled else "not compiled"


def check_half_precision(cfg: DictConfig, trainer: Trainer) -> None:
    """precision=16-true keeps the optimizer's state in float16 too, where Adam's default `eps` rounds to 0: the first
    update divides by zero and the run diverges at step 1, on any device. Refused before training instead."""
    optimizer = OmegaConf.select(cfg, "model.optimizer")
    if trainer.precision != "16-true" or not isinstance(optimizer, DictConfig) or "_target_" not in optimizer:
        return
    eps = optimizer.get("eps")
    if eps is None:  # the optimizer's own default
        parameter = inspect.signature(get_object(optimizer._target_)).parameters.get("eps")
        eps = None if parameter is None else parameter.default
    if isinstance(eps, float) and eps > 0 and torch.tensor(eps, dtype=torch.float16).item() == 0:
        raise UserError(
            "precision=16-true keeps the weights and the optimizer's state in float16, where "
            f"model.optimizer.eps={eps:g} ({optimizer._target_}) is 0, so the first update would divide by zero. "
            "Use precision=16-mixed (float32 weights; bf16 on a CPU), precision=bf16-true, "
            "or model.optimizer.eps=1e-4 with 16-true."
        )


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


def close_run() -> None:
    """What Lightning leaves open after a run: a W&B run (the next job of a sweep in this process would log into it)
    and the process group, whose gloo threads, still alive at interpreter exit, can abort a rank (SIGABRT)."""
    wandb = sys.modules.get("wandb")  # only if some logger imported it
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank tears down while another still talks to it
        torch.distributed.destroy_process_group()
