"""The checks of what a user typed that only some switches and commands need, imported only when one of them is given:
a checkpoint to start from (`ckpt_path`, `init_from`; eval, predict and export require one), predict's prompt and
input and export's format, the process count a launcher fixed (torchrun, srun), and precision=16-true. What every
run checks is `validation`'s; each check here raises the same UserError wherever it is called from."""

import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from hydralight.core.errors import UserError, choices_message

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer


def validate_ckpt_path(ckpt_path: object, required: bool, key: str = "ckpt_path") -> None:
    """An explicit checkpoint (the value of `key`) must be an existing file; eval requires one."""
    if ckpt_path is None and not required:
        return
    hint = f"Give the path of a .ckpt file, e.g. {key}=outputs/train/runs/<run>/checkpoints/last.ckpt"
    if ckpt_path is None:
        raise UserError(f"{key} is required. {hint}")
    path = Path(str(ckpt_path))
    if not path.exists():
        raise UserError(f"{key}={ckpt_path!r}: no such file. {hint}")
    if not path.is_file():
        raise UserError(f"{key}={ckpt_path!r} is a directory, not a checkpoint file. {hint}")


def validate_init_from(cfg: DictConfig) -> None:
    """`init_from` (fine-tuning: weights only) is a checkpoint file, never together with `ckpt_path` (resuming: the
    whole training state); `init_from_strict` is a boolean."""
    init_from = cfg.get("init_from")
    if init_from is None:
        return
    if cfg.get("ckpt_path") is not None:
        raise UserError(
            f"init_from={init_from!r} and ckpt_path={cfg.ckpt_path!r} are two ways to start: init_from takes a "
            "checkpoint's weights into a new run, ckpt_path continues that run's training. Give one of them."
        )
    validate_ckpt_path(init_from, required=True, key="init_from")
    strict = cfg.get("init_from_strict", True)
    if not isinstance(strict, bool):
        raise UserError(f"init_from_strict={strict!r} is not valid. Use true or false.")


def validate_inference(cfg: DictConfig, **choices: tuple[str, ...]) -> None:
    """predict/export: the checkpoint exists and each `key` has one of its `choices` (no torch needed to tell)."""
    validate_ckpt_path(None if OmegaConf.is_missing(cfg, "ckpt_path") else cfg.ckpt_path, required=True)
    for key, valid in choices.items():
        if cfg[key] not in valid:
            raise UserError(choices_message(key, cfg[key], valid))
    path = Path(str(cfg.get("input") or ""))
    if cfg.get("input") and (path.suffix not in (".pt", ".npy", ".csv") or not path.is_file()):
        raise UserError(f"input={cfg.input!r}: no such .pt, .npy or .csv file. Give one, or input=null (test split)")


def validate_prompt(cfg: DictConfig) -> dict[str, object]:
    """predict.py's `prompt=`: text, the only input, and the entries of `prompt_kwargs` the user set (not null),
    which are refused without a prompt (they would change nothing). Returns those entries."""
    kwargs = {name: value for name, value in (cfg.get("prompt_kwargs") or {}).items() if value is not None}
    prompt = cfg.get("prompt")
    if prompt is None:
        if kwargs:
            name, value = next(iter(kwargs.items()))
            raise UserError(
                f'{name}={value!r} is an option of prompt=<text>, and no prompt is given: add prompt="...", or drop '
                f"{name}=."
            )
        return kwargs
    if not isinstance(prompt, str):
        raise UserError(
            f"prompt={prompt!r} is not text: Hydra read it as {type(prompt).__name__}. Quote it inside the shell's "
            f"quotes: 'prompt=\"{prompt}\"'."
        )
    if cfg.get("input"):
        raise UserError(
            f"prompt={prompt!r} and input={cfg.get('input')!r} are two inputs: give prompt= to continue a prompt, or "
            "input= to predict on a file."
        )
    return kwargs


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


def check_half_precision(cfg: DictConfig, trainer: "Trainer") -> None:
    """precision=16-true keeps the optimizer's state in float16 too, where Adam's default `eps` rounds to 0: the first
    update divides by zero and the run diverges at step 1, on any device. Refused before training instead."""
    import torch
    from hydra.utils import get_object

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


def check_manual_optimization(cfg: DictConfig, model: "LightningModule") -> None:
    """A module that steps its own optimizers (`automatic_optimization = False`, a GAN): the switches Lightning
    applies only to automatic optimization are refused before training, saying what the module does instead
    (Lightning raises a MisconfigurationException mid-setup, or the LR finder "works with a single optimizer")."""
    name = type(model).__name__
    if cfg.get("gradient_clip_val") is not None:
        raise UserError(
            f"gradient_clip_val={cfg.gradient_clip_val}: {name} steps its own optimizers (automatic_optimization="
            "False), so Lightning cannot clip for it. Clip in its training_step with self.clip_gradients(optimizer, "
            "gradient_clip_val=..., gradient_clip_algorithm='norm') before optimizer.step(), and leave "
            "gradient_clip_val=null."
        )
    if cfg.get("accumulate_grad_batches", 1) != 1:
        raise UserError(
            f"accumulate_grad_batches={cfg.accumulate_grad_batches}: {name} steps its own optimizers "
            "(automatic_optimization=False), so Lightning cannot accumulate for it. Call optimizer.step() and "
            "zero_grad() every N batches in its training_step (scale the loss by 1/N), and leave "
            "accumulate_grad_batches=1."
        )
    if "lr_find" in (cfg.get("callbacks") or {}):
        raise UserError(
            f"tune=lr_find: {name} steps its own optimizers (automatic_optimization=False), and Lightning's "
            "learning-rate finder drives one optimizer through automatic optimization. Drop tune=lr_find and set "
            "the learning rates in the module's config."
        )


def find_unused_parameters_for(trainer: "Trainer", model: "LightningModule") -> None:
    """Under DDP a module that steps its own optimizers (a GAN) leaves, in each of its backward passes, the other
    networks' parameters without a gradient, which DDP refuses unless told (a RuntimeError at the first step): tell
    it, in one line, as `strategy.find_unused_parameters=true` would."""
    from lightning.pytorch.strategies import DDPStrategy

    from hydralight.compat.lightning import ddp_kwargs
    from hydralight.core.console import info

    if not isinstance(trainer.strategy, DDPStrategy) or ddp_kwargs(trainer.strategy).get("find_unused_parameters"):
        return
    ddp_kwargs(trainer.strategy)["find_unused_parameters"] = True
    info(
        "strategy.find_unused_parameters=true: %s steps its own optimizers, and each of its backward passes leaves "
        "the other networks' parameters unused, which DDP must be told",
        type(model).__name__,
    )
