"""Every check of what a user typed, in one place, so a mistake stops the run with one line before anything is built.

1. The switches, the trainer and the data keys (`validate`): no torch, so a typo costs a second, not a torch import.
2. Every `_target_` against what it builds (`check_targets`), one mechanism for every class instead of a rule per
   key: before anything is built its arguments are bound to the target's signature (the idea of torchtune's
   `tune validate`); when it is built (`instantiate`), a constructor's own ValueError/TypeError becomes a UserError
   naming the config key (worded by `refused`, imported only then). Imports no torch itself; checking a node imports
   its target's module.
3. What only the machine can tell (`check_devices`): GPUs, cores.

What only some switches and commands need (a checkpoint to start from, predict's and export's inputs, a launcher's
process count, precision=16-true) is `switch_checks`', imported only when one is given.
"""

import ast
import difflib
import inspect
import itertools
import os
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from hydralight.compat.hydra import locate as _locate  # what instantiate resolves `_target_` with
from hydralight.core.errors import RunStopped, UserError, choices_message

# The values Lightning's Trainer accepts (lightning.fabric.plugins.precision.precision; a test keeps them in sync).
PRECISIONS = (
    "32-true", "16-mixed", "bf16-mixed", "64-true", "16-true", "bf16-true",
    "transformer-engine", "transformer-engine-float16",
    "64", "32", "16", "bf16", 64, 32, 16,
)  # fmt: skip
CLIP_ALGORITHMS = ("norm", "value")
RESUME_MODES = ("auto", "never")
BOOLEAN_SWITCHES = ("test", "print_config", "init_from_strict", "keep_freed_memory", "async_checkpoint", "compile")
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
    validate_seed(cfg.seed)
    validate_early_stopping(cfg.get("callbacks"))
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
    for key in BOOLEAN_SWITCHES:  # `test=maybe` would otherwise count as true
        value = cfg.get(key, False)
        _require(isinstance(value, bool), f"{key}={value!r} is not valid. Use true or false.")


SEED_RANGE = (0, 2**32 - 1)  # what numpy's and every loader worker's generators take


def validate_seed(seed: object) -> int:
    _require(
        _is_int(seed) and SEED_RANGE[0] <= seed <= SEED_RANGE[1],
        f"seed={seed!r} is not valid. Use a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]}, e.g. seed=42.",
    )
    return seed


def validate_early_stopping(callbacks: DictConfig | None) -> None:
    """EarlyStopping takes a negative patience and then stops after the first epoch that does not improve."""
    for key, node in (callbacks or {}).items():
        if isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("EarlyStopping"):
            patience = node.get("patience", 3)
            _require(
                _is_int(patience) and patience >= 0,
                f"callbacks.{key}.patience={patience!r} is not valid. Use a whole number >= 0: the validation "
                "epochs without improvement before training stops.",
            )


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
    if cfg.get("data") is None:  # eval/predict in a project with no default data: the checkpoint's own is used
        return
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


def validate_targets(cfg: DictConfig) -> None:
    """Every `_target_` against its signature: imports the targets' modules, torch among them, so it runs after
    `validate` and before anything is built."""
    check_targets(cfg)


def validate(cfg: DictConfig, *, ckpt_required: bool) -> None:
    """All checks that need no torch; raises UserError on the first problem."""
    validate_switches(cfg)
    validate_trainer(cfg)
    if not ckpt_required:  # a training run
        limit = cfg.trainer.get("limit_train_batches")
        _require(
            limit != 0,
            f"trainer.limit_train_batches={limit!r} trains nothing, so the test after it would test an untrained "
            "model. Use a number of batches >= 1 or a fraction in (0, 1]; to test a checkpoint: python eval.py "
            "ckpt_path=<file>.",
        )
    validate_data(cfg)
    ckpt_path = None if OmegaConf.is_missing(cfg, "ckpt_path") else cfg.ckpt_path
    if ckpt_required or ckpt_path is not None or cfg.get("init_from") is not None:
        from hydralight.core.switch_checks import validate_ckpt_path, validate_init_from  # a checkpoint to start from

        validate_ckpt_path(ckpt_path, required=ckpt_required)
        validate_init_from(cfg)
    validate_required(cfg)


def validate_required(cfg: DictConfig) -> None:
    """A `???` left in the composed config (a value an option needs from the command line), named with how to give it,
    instead of omegaconf's MissingMandatoryValue traceback when it is first read."""
    missing = sorted(str(key) for key in OmegaConf.missing_keys(cfg) if not str(key).startswith("hydra."))
    _require(
        not missing,
        f"{', '.join(missing)}: required by the options you chose and not given (??? in their config). "
        f"Give it on the command line, e.g. {missing[0] if missing else ''}=<value>.",
    )


def check_devices(accelerator: object, devices: object, one_process: bool = False) -> None:
    """What Lightning reports late or not at all: a GPU accelerator without a GPU, more CPU processes than cores
    (`one_process`: the strategy starts none, as strategy=dp, which runs on one device without CUDA)."""
    import torch

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


SKIPPED_ROOT_KEYS = ("hydra",)  # Hydra's own launchers, sweepers and callbacks: Hydra checks those itself
NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
UNKNOWN = object()  # an argument whose value cannot be resolved yet (a missing value, an interpolation error)


def _child_key(prefix: str, key: object) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def target_nodes(
    node: object, key: str, parent_recursive: bool | None = None
) -> Iterator[tuple[str, DictConfig, bool]]:
    """(config key, node, complete) for every node with a `_target_` in `node`, depth first. `complete`: Hydra
    builds it with the config's arguments and nothing else (it sits inside a recursive `_target_`); a top-level node
    is built by code that may add arguments (the Trainer gets its callbacks), and so is one under
    `_recursive_: false` (conf/model/classifier.yaml: the module builds its net and optimizer itself)."""
    if not isinstance(node, DictConfig | ListConfig):
        return
    children_recursive = parent_recursive
    if isinstance(node, DictConfig) and "_target_" in node:
        complete = parent_recursive is True and not node.get("_partial_", False)
        yield key, node, complete
        children_recursive = bool(node.get("_recursive_", True))
    for child in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        if isinstance(child, str) and child.startswith("_"):
            continue
        if OmegaConf.is_missing(node, child) or OmegaConf.is_interpolation(node, child):
            continue  # an interpolated node is checked where it is defined
        yield from target_nodes(node[child], _child_key(key, child), children_recursive)


def _arguments(node: DictConfig) -> dict[str, Any]:
    """The node's keyword arguments, resolved (UNKNOWN where a value cannot be resolved yet)."""
    arguments = {}
    for name in node:
        if str(name).startswith("_"):
            continue
        try:
            value = node[name]
            arguments[str(name)] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        except Exception:  # a missing value, or an interpolation only the runtime can resolve
            arguments[str(name)] = UNKNOWN
    return arguments


def _signature(target: Any) -> inspect.Signature | None:
    for eval_str in (True, False):  # string annotations evaluated where their names resolve
        try:
            return inspect.signature(target, eval_str=eval_str)
        except (NameError, TypeError, SyntaxError):
            continue
        except ValueError:  # a builtin without a signature: nothing to check against
            return None
    return None


def _passes_on(function: Any, name: str) -> bool:
    """Whether `function` calls a base's `__init__` with `**name`: then those keywords are that base's arguments."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):  # no source (a C extension): cannot tell
        return False
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "__init__"
        and any(kw.arg is None and isinstance(kw.value, ast.Name) and kw.value.id == name for kw in node.keywords)
        for node in ast.walk(tree)
    )


def _var_keyword(parameters: list[inspect.Parameter]) -> str | None:
    return next((p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD), None)


def accepted_parameters(target: Any) -> tuple[dict[str, inspect.Parameter], bool] | None:
    """The named parameters a call of `target` accepts, and whether it accepts any other keyword as well. A class
    whose `__init__` passes its `**kwargs` on to its base's `__init__` (DigitsDataModule does) accepts the base's
    parameters too; `**kwargs` kept for something else (DDPStrategy's for DistributedDataParallel) accept anything."""
    signature = _signature(target)
    if signature is None:
        return None
    parameters = list(signature.parameters.values())
    named = {p.name: p for p in parameters if p.kind in NAMED}
    var_keyword = _var_keyword(parameters)
    if var_keyword is None:
        return named, False
    if not isinstance(target, type):
        return named, True
    owners = [cls for cls in target.__mro__ if "__init__" in vars(cls)]  # the __init__s, in the order super() runs
    for owner, base in itertools.pairwise(owners):
        if base is object or not _passes_on(vars(owner)["__init__"], var_keyword):
            return named, True
        base_signature = _signature(base.__init__)
        if base_signature is None:
            return named, True
        base_parameters = list(base_signature.parameters.values())[1:]  # without self
        for parameter in base_parameters:
            if parameter.kind in NAMED:
                named.setdefault(parameter.name, parameter)
        var_keyword = _var_keyword(base_parameters)
        if var_keyword is None:
            return named, False
    return named, True


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(member for member in typing.get_args(annotation) if member is not type(None))
    return (annotation,)


def expected_kind(parameter: inspect.Parameter) -> str | None:
    """'a number' or 'true or false' where a parameter clearly takes one and never a string: from its annotation
    (float, int, bool, a Tensor, optional or not), or from its default when it has no annotation."""
    if parameter.annotation is not inspect.Parameter.empty:
        members = _union_members(parameter.annotation)
        if members == (bool,):
            return "true or false"
        numeric = [member for member in members if member in (int, float)]
        tensors = [member for member in members if isinstance(member, type) and member.__name__ == "Tensor"]
        return "a number" if numeric and len(numeric) + len(tensors) == len(members) else None
    default = parameter.default
    if isinstance(default, bool):
        return "true or false"
    return "a number" if isinstance(default, int | float) else None


def _locate_target(key: str, node: DictConfig) -> Any:
    target = node._target_
    if not isinstance(target, str):
        return target
    try:
        return _locate(target)
    except ImportError as error:
        message = " ".join(str(error).split())
        raise UserError(f"{key}._target_={target!r} cannot be imported: {message}") from error


def _unknown_argument(key: str, name: str, value: object, target: str, valid: list[str]) -> UserError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    shown = "" if value is UNKNOWN else f"={value!r}"
    return UserError(f"{_child_key(key, name)}{shown} is not an argument of {target}{hint}. Valid: {', '.join(valid)}")


def _is_optimizer(target: Any) -> bool:
    torch = sys.modules.get("torch")  # already imported if the target is a torch optimizer
    return torch is not None and isinstance(target, type) and issubclass(target, torch.optim.Optimizer)


def _try_optimizer(key: str, node: DictConfig, arguments: dict[str, Any]) -> None:
    """Optimizers are built only inside fit (configure_optimizers): build this one now on a single dummy
    parameter, so a value it refuses stops the run before anything else is built."""
    import torch

    parameter = torch.nn.Parameter(torch.zeros(1))  # on the CPU: no CUDA context in a process before its Trainer
    try:
        hydra_instantiate(node, _convert_="all")([parameter])
    except (ValueError, TypeError) as error:
        raise _refused(key, node, arguments, error) from error


def check_node(key: str, node: DictConfig, complete: bool) -> None:
    """One `_target_` node: its target imports, each argument is one it takes, with a value of the kind it takes,
    and (if Hydra alone builds it) nothing it requires is missing."""
    target = _locate_target(key, node)
    accepted = accepted_parameters(target) if callable(target) else None
    if accepted is None:
        return
    named, open_ = accepted
    target_name = str(node._target_)
    arguments = _arguments(node)
    for name, value in arguments.items():
        if name not in named and not open_:
            raise _unknown_argument(key, name, value, target_name, list(named))
        kind = expected_kind(named[name]) if name in named else None
        if kind and isinstance(value, str):
            default = named[name].default
            shown = "" if default is inspect.Parameter.empty else f" (default {default!r})"
            raise UserError(f"{_child_key(key, name)}={value!r} is not valid: {target_name} takes {kind} here{shown}")
    partial = bool(node.get("_partial_", False))
    positional = list(node.get("_args_", []))
    if complete and not partial and not open_:
        try:
            inspect.signature(target).bind(*positional, **arguments)
        except TypeError as error:
            raise UserError(f"{key}: {target_name} {error}; set it under {key}") from error
    if partial and _is_optimizer(target) and UNKNOWN not in arguments.values():
        _try_optimizer(key, node, arguments)


def check_targets(cfg: DictConfig) -> None:
    """Before anything is built: every `_target_` in the config (Hydra's own node aside) against its signature."""
    for root in cfg:
        if root in SKIPPED_ROOT_KEYS or OmegaConf.is_missing(cfg, root) or OmegaConf.is_interpolation(cfg, root):
            continue
        for key, node, complete in target_nodes(cfg[root], str(root)):
            check_node(key, node, complete)


def _refused(key: str, node: DictConfig, arguments: dict[str, Any], error: Exception) -> UserError:
    """The constructor of `node` refused `arguments`: one line naming the config key (hydralight.core.refused)."""
    from hydralight.core.refused import refused  # only once a constructor refused

    given = {name: value for name, value in arguments.items() if value is not UNKNOWN}
    return refused(key, str(node.get("_target_", "the target")), given, error)


def instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    """Hydra's instantiate; a constructor's ValueError/TypeError becomes a UserError naming the config key of the
    node that raised (`model.net` when the model builds its net), the value and the constructor's message."""
    try:
        return hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as error:
        from hydralight.compat.omegaconf import full_key  # only once a constructor refused
        from hydralight.core.refused import innermost, raising_node

        target, cause = innermost(error)
        if isinstance(cause, RunStopped):
            raise cause from None  # a constructor's own clear stop (a UserError) needs no wrapping
        if not isinstance(config, DictConfig) or not isinstance(cause, ValueError | TypeError):
            raise
        key = full_key(config)
        key, node = raising_node(target_nodes(config, key), target, default=(key, config))
        raise _refused(key, node, _arguments(node), cause) from error
