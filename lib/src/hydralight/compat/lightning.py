"""Lightning's private surface the library relies on (tested against lightning 2.6; `tests/test_compat.py`)."""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lightning.fabric.utilities.init import _materialize_distributed_module as materialize_distributed_module
from lightning.fabric.utilities.logger import _convert_params as convert_params
from lightning.fabric.utilities.logger import _flatten_dict as flatten_dict
from lightning.fabric.utilities.optimizer import _optimizers_to_device as optimizers_to_device

if TYPE_CHECKING:
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loops import _FitLoop

__all__ = [
    "CSV_RECORD_NEW_KEYS",
    "DDP_LAUNCHER_MODULE",
    "DDP_LAUNCH_FUNCTIONS",
    "MODEL_SUMMARY_HOOK",
    "batches_that_stepped",
    "convert_params",
    "ddp_kwargs",
    "flatten_dict",
    "forget_train_loader",
    "loader_states_to_load",
    "materialize_distributed_module",
    "mlflow_client",
    "mlflow_run_id",
    "mlflow_tracking_uri",
    "optimizers_to_device",
    "rekey_optimizer_state_if_needed",
    "replace_clip_grad_by_norm",
    "replace_ddp_launch",
    "restore_ddp_launch",
    "save_at_every_epoch_end",
    "set_mlflow_run_id",
    "set_wandb_run_id",
    "should_accumulate",
    "tensorboard_writer_kwargs",
    "train_loader_built",
    "wandb_run_id",
    "writes_logs_this_step",
]

# Methods the library's subclasses override (no public hook exists for what they change).
MODEL_SUMMARY_HOOK = "_summary"  # ModelSummary._summary: the summary of a sharded model
CSV_RECORD_NEW_KEYS = "_record_new_keys"  # csv_logs.ExperimentWriter._record_new_keys: a header kept on resume


def rekey_optimizer_state_if_needed(*args: Any, **kwargs: Any) -> Any:
    """Fabric's re-keying of a sharded optimizer state by parameter name (imported where used: it loads torch's
    distributed checkpoint modules)."""
    from lightning.fabric.strategies.model_parallel import _rekey_optimizer_state_if_needed

    return _rekey_optimizer_state_if_needed(*args, **kwargs)


def loader_states_to_load(fit_loop: "_FitLoop") -> list:
    """The train loaders' saved positions a resumed fit restores when it builds them (empty when there are none)."""
    return fit_loop._combined_loader_states_to_load


def train_loader_built(fit_loop: "_FitLoop") -> bool:
    return fit_loop._combined_loader is not None


def forget_train_loader(fit_loop: "_FitLoop") -> None:
    """Drop the built train loader, so that `fit_loop.setup_data()` builds it again (with the saved positions)."""
    fit_loop._combined_loader = None


def should_accumulate(trainer: "Trainer") -> bool:
    """This batch accumulates gradients (no optimizer step after it)."""
    return trainer.fit_loop._should_accumulate()


def writes_logs_this_step(trainer: "Trainer") -> bool:
    """Lightning sends this step's values to the loggers (its `log_every_n_steps` schedule)."""
    return trainer._logger_connector.should_update_logs


def batches_that_stepped(trainer: "Trainer") -> int:
    """The step Lightning writes its own log rows on (optimizer steps so far, as LearningRateMonitor reads it)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def ddp_kwargs(strategy: Any) -> dict[str, Any]:
    """The keyword arguments a DDPStrategy hands DistributedDataParallel (find_unused_parameters, ...)."""
    return strategy._ddp_kwargs


def save_at_every_epoch_end(checkpoint: "ModelCheckpoint") -> None:
    """A ModelCheckpoint with a step or time trigger saves at each epoch's end too (its constructor takes one)."""
    checkpoint._every_n_epochs = 1


def replace_clip_grad_by_norm(precision_plugin: Any, clip: Callable[[Any, float], None]) -> None:
    """The precision plugin clips by norm with `clip(optimizer, clip_val)` instead of its own (which cannot clip
    DTensor gradients sharded over a device mesh)."""
    precision_plugin.clip_grad_by_norm = clip


# The loggers: what a resumed run needs to continue the same runs, which their constructors take only before the
# run exists (and then read from these attributes when they create it).


def mlflow_client(logger: Any) -> Any:
    return logger._mlflow_client


def mlflow_tracking_uri(logger: Any) -> str | None:
    return logger._tracking_uri


def mlflow_run_id(logger: Any) -> str | None:
    """The run the MLFlowLogger logs to, None before it made one (`logger.run_id` would make one)."""
    return logger._run_id


def set_mlflow_run_id(logger: Any, run_id: str) -> None:
    logger._run_id = run_id


def tensorboard_writer_kwargs(logger: Any) -> dict[str, Any]:
    """The keyword arguments the TensorBoardLogger gives the SummaryWriter it creates (e.g. `purge_step`)."""
    return logger._kwargs


def wandb_run_id(logger: Any) -> str | None:
    """The W&B run id the WandbLogger will init with, None for a new one."""
    return logger._wandb_init.get("id")


def set_wandb_run_id(logger: Any, run_id: str) -> None:
    logger._wandb_init["id"] = logger._id = run_id


# Lightning's DDP launcher re-runs `sys.argv` for ranks > 0 (a whole `-m` sweep, Lightning #11300): each job of a sweep
# replaces how it builds a rank's command and how it watches the ranks, and puts them back after the job.
DDP_LAUNCHER_MODULE = "lightning.pytorch.strategies.launchers.subprocess_script"
DDP_LAUNCH_FUNCTIONS = ("_hydra_subprocess_cmd", "_launch_process_observer")  # (rank command, process observer)


def replace_ddp_launch(rank_command: Callable[..., Any], observe: Callable[..., Any]) -> dict[str, Any]:
    """Put `rank_command` and `observe` in the launcher's place; returns the originals (for `restore_ddp_launch`),
    none of a name this Lightning lacks."""
    import importlib

    module = importlib.import_module(DDP_LAUNCHER_MODULE)  # torch + lightning: the job trains anyway
    originals = {}
    for name, replacement in zip(DDP_LAUNCH_FUNCTIONS, (rank_command, observe), strict=True):
        if hasattr(module, name):
            originals[name] = getattr(module, name)
            setattr(module, name, replacement)
    return originals


def restore_ddp_launch(originals: dict[str, Any]) -> None:
    import sys

    module = sys.modules.get(DDP_LAUNCHER_MODULE)
    for name, original in originals.items():
        setattr(module, name, original)
