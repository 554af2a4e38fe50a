"""Checks a composed config before anything heavy is imported, so a typo costs a second, not a torch import."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hydralight.errors import UserError, choices_message

# The values Lightning's Trainer accepts (lightning.fabric.plugins.precision.precision; a test keeps them in sync).
PRECISIONS = (
    "32-true", "16-mixed", "bf16-mixed", "64-true", "16-true", "bf16-true",
    "transformer-engine", "transformer-engine-float16",
    "64", "32", "16", "bf16", 64, 32, 16,
)  # fmt: skip
CLIP_ALGORITHMS = ("norm", "value")
RESUME_MODES = ("auto", "never")
MONITOR_MODES = ("max", "min")  # Lightning's ModelCheckpoint / EarlyStopping `mode`
MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")  # Lightning's names; "gpu" is cuda or mps


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def validate_switches(cfg: DictConfig) -> None:
    """The top-level switches every task shares (train.yaml / eval.yaml)."""
    _require(cfg.precision in PRECISIONS, choices_message("precision", cfg.precision, PRECISIONS[:8]))
    acc = cfg.accumulate_grad_batches
    _require(
        _is_int(acc) and acc >= 1,
        f"accumulate_grad_batches={acc!r} is not valid. Use a whole number >= 1 (1 = no accumulation).",
    )
    clip = cfg.gradient_clip_val
    _require(
        clip is None or (_is_number(clip) and clip >= 0),
        f"gradient_clip_val={clip!r} is not valid. Use a number >= 0, or null for no clipping.",
    )
    _require(
        cfg.gradient_clip_algorithm in CLIP_ALGORITHMS,
        choices_message("gradient_clip_algorithm", cfg.gradient_clip_algorithm, CLIP_ALGORITHMS),
    )
    _require(_is_int(cfg.seed), f"seed={cfg.seed!r} is not valid. Use a whole number, e.g. seed=42.")
    mode = cfg.get("mode", "max")
    _require(mode in MONITOR_MODES, choices_message("mode", mode, MONITOR_MODES))
    monitor = cfg.get("monitor", "val/acc")
    _require(
        isinstance(monitor, str) and bool(monitor),
        f"monitor={monitor!r} is not valid. Name a metric the module logs, e.g. monitor=val/loss mode=min.",
    )
    resume = cfg.get("resume", "auto")
    _require(resume in RESUME_MODES, choices_message("resume", resume, RESUME_MODES))
    matmul = cfg.get("float32_matmul_precision", "highest")
    _require(matmul in MATMUL_PRECISIONS, choices_message("float32_matmul_precision", matmul, MATMUL_PRECISIONS))
    threads = cfg.get("cpu_threads")
    _require(
        threads is None or (_is_int(threads) and threads >= 1),
        f"cpu_threads={threads!r} is not valid. Use a whole number >= 1, or null for torch's default.",
    )
    keep = cfg.get("keep_freed_memory", False)
    _require(isinstance(keep, bool), f"keep_freed_memory={keep!r} is not valid. Use true or false.")


def validate_trainer(cfg: DictConfig) -> None:
    """Trainer values whose wrong types Lightning would report deep inside a traceback."""
    trainer = cfg.trainer
    max_epochs = trainer.get("max_epochs")
    _require(
        max_epochs is None or (_is_int(max_epochs) and (max_epochs >= 1 or max_epochs == -1)),  # 0: test untrained
        f"trainer.max_epochs={max_epochs!r} is not valid. Use a whole number >= 1 (or -1 for no limit).",
    )
    min_epochs = trainer.get("min_epochs")
    _require(
        min_epochs is None or (_is_int(min_epochs) and min_epochs >= -1),
        f"trainer.min_epochs={min_epochs!r} is not valid. Use a whole number >= 0 (0 or -1: no minimum).",
    )
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = trainer.get(key)
        _require(
            value is None or (_is_int(value) and value >= 0) or (isinstance(value, float) and 0 <= value <= 1),
            f"trainer.{key}={value!r} is not valid. Use a number of batches (>= 0), a fraction in [0, 1], or null.",
        )
    accelerator = trainer.get("accelerator", "auto")
    _require(
        accelerator in ACCELERATORS or OmegaConf.is_dict(accelerator),  # a dict: a custom Accelerator's _target_
        choices_message("trainer.accelerator", accelerator, ACCELERATORS),
    )
    devices = trainer.get("devices")
    _require(
        devices == "auto" or (_is_int(devices) and devices != 0 and devices >= -1) or OmegaConf.is_list(devices),
        f"trainer.devices={devices!r} is not valid. Use a number of devices >= 1, -1 (all GPUs), 'auto' "
        "or a list of device indices.",
    )


def validate_data(cfg: DictConfig) -> None:
    """The loader keys most data modules take, where the data config has them (a task's own may have neither)."""
    if "batch_size" in cfg.data:
        batch_size = cfg.data.batch_size
        _require(
            _is_int(batch_size) and batch_size >= 1,
            f"data.batch_size={batch_size!r} is not valid. Use a whole number >= 1.",
        )
    if "num_workers" in cfg.data:
        num_workers = cfg.data.num_workers
        _require(
            _is_int(num_workers) and num_workers >= 0,
            f"data.num_workers={num_workers!r} is not valid. Use a whole number >= 0 (0 = load in the main process).",
        )


def validate_ckpt_path(ckpt_path: object, required: bool) -> None:
    """An explicit checkpoint must be an existing file; eval requires one."""
    if ckpt_path is None and not required:
        return
    hint = "Give the path of a .ckpt file, e.g. ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt"
    _require(ckpt_path is not None, f"ckpt_path is required. {hint}")
    path = Path(str(ckpt_path))
    _require(path.exists(), f"ckpt_path={ckpt_path!r}: no such file. {hint}")
    _require(path.is_file(), f"ckpt_path={ckpt_path!r} is a directory, not a checkpoint file. {hint}")


def validate_targets(cfg: DictConfig) -> None:
    """Every `_target_` against its signature (hydralight.targets): imports the targets' modules, torch among them,
    so it runs after `validate` and before anything is built."""
    from hydralight.targets import check_targets

    check_targets(cfg)


def validate(cfg: DictConfig, *, ckpt_required: bool) -> None:
    """All checks that need no torch; raises UserError on the first problem."""
    validate_switches(cfg)
    validate_trainer(cfg)
    validate_data(cfg)
    ckpt_path = None if OmegaConf.is_missing(cfg, "ckpt_path") else cfg.ckpt_path
    validate_ckpt_path(ckpt_path, required=ckpt_required)
