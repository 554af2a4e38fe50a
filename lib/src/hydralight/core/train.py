"""The train task: build everything from the config, fit (resuming if there is a checkpoint to continue from),
test the best checkpoint, return the sweep metric."""

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig

from hydralight.core.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_trainer,
    close_run,
    log_hyperparameters,
)
from hydralight.core.callbacks.reports import best_metrics, monitoring_checkpoint
from hydralight.core.callbacks.resume import Preemption, ResumeState, SeedTheTest, TaskRecord, stops_cleanly
from hydralight.core.console import info, print_config_tree, print_final_metrics, quiet_console
from hydralight.core.errors import DiskFull, Interrupted, Preempted, UserError
from hydralight.core.files import out_of_space, remove_partials
from hydralight.core.loggers import continue_logging
from hydralight.core.resolvers import created_dirs, in_multirun
from hydralight.core.runs.checkpoints import checkpoint_dir, init_from_checkpoint, newest_checkpoint, resume_checkpoint
from hydralight.core.runs.guard import training_started
from hydralight.core.runs.provenance import write_provenance
from hydralight.core.validation import instantiate, validate_targets


@contextmanager
def disk_full_is_a_clear_error(trainer: pl.Trainer) -> Iterator[None]:
    """A full disk anywhere in training (a log, metrics.json; a checkpoint's own writer says it itself): one line,
    exit 74. Every file is written whole or not at all, so what is on disk is intact."""
    try:
        yield
    except OSError as error:
        if not out_of_space(error):
            raise
        raise DiskFull(
            f"the disk is full ({error.filename or checkpoint_dir(trainer)}). Every file is written whole or not at "
            "all, so the checkpoints already on disk are intact: free some space and re-run the same command to "
            "continue."
        ) from error


# What torch raises when an allocation fails: torch.OutOfMemoryError on a GPU, a RuntimeError from the CPU allocator.
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory")


@contextmanager
def out_of_memory_is_a_clear_error(cfg: DictConfig) -> Iterator[None]:
    """Memory runs out in a step: one line saying what to lower, instead of the allocator's traceback."""
    try:
        yield
    except RuntimeError as error:  # torch.OutOfMemoryError is one
        if not any(text in str(error) for text in _OUT_OF_MEMORY):
            raise
        batch = cfg.get("data", {}).get("batch_size")
        raise UserError(
            f"out of memory ({str(error).splitlines()[0][:160]}). Lower data.batch_size (now {batch}; "
            "accumulate_grad_batches=N keeps the effective batch), use precision=bf16-mixed, or a smaller model. "
            "The checkpoints already on disk are intact: the same command continues from them."
        ) from error


def check_elastic_restarts() -> None:
    """`torchrun --max-restarts=N`: by default torchrun's workers share its rendezvous store, and a restarted group
    then reads the dead group's addresses and hangs in its first collective (torch #135712). Refuse before training,
    saying how to start torchrun, rather than let the first restart hang."""
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    if restarts > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        raise UserError(
            f"torchrun --max-restarts={restarts} shares its rendezvous store with the workers, and a restarted group "
            "then hangs connecting to the dead one (torch #135712). Start torchrun with "
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment, e.g. TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
            "torchrun --max-restarts=3 ... train.py run_name=<job>."
        )


NOTHING_SAVED = "Nothing was saved yet: the same command starts the run again."


def how_to_continue(cfg: DictConfig, trainer: pl.Trainer) -> str:
    """The command that continues this run from the checkpoint resume=auto would pick, or that there is none."""
    newest = newest_checkpoint(trainer.default_root_dir, checkpoint_dir(trainer))
    if newest is None:
        return "No checkpoint was written yet: re-running starts from the beginning."
    if cfg.ckpt_path is not None:  # the same command would start from that file again
        return f"To continue, run the same command with ckpt_path={newest}."
    run_dir = Path(trainer.default_root_dir)
    resume = "" if cfg.get("resume", "auto") == "auto" else " resume=auto"
    if in_multirun():  # a -m job's dir is its number in the sweep dir: the same sweep there continues every job
        return (
            f"To continue, run the same -m command with hydra.sweep.dir={run_dir.parent}{resume}: each job continues "
            f"from its own newest checkpoint (this one from {newest})."
        )
    if run_dir.resolve() in created_dirs:  # the same command would make a new run dir
        return f"To continue from {newest}, run the same command with hydra.run.dir={run_dir}{resume}."
    return f"Re-run the same command{' with' + resume if resume else ''} to continue from {newest} (resume=auto)."


@contextmanager
def ctrl_c_is_a_clear_stop(cfg: DictConfig, trainer: pl.Trainer) -> Iterator[None]:
    """Lightning answers Ctrl-C with a graceful shutdown and exit code 1, which the README's exit codes keep for
    bugs: stop with 130 instead, and say how to continue."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as stop:
        # Lightning calls exit(1) inside its own KeyboardInterrupt handler; any other exit is not ours to change.
        if isinstance(stop, SystemExit) and not isinstance(stop.__context__, KeyboardInterrupt):
            raise
        raise Interrupted(f"stopped by Ctrl-C at step {trainer.global_step}. {how_to_continue(cfg, trainer)}") from None


# What Lightning's ModelCheckpoint and EarlyStopping raise when the metric they monitor was never logged.
_UNLOGGED_MONITOR = re.compile(
    r"monitor='(?P<checkpoint>[^']*)'\)` could not find the monitored key|conditioned on metric `(?P<early>[^`]*)`"
)


@contextmanager
def unlogged_monitor_is_a_clear_error(trainer: pl.Trainer, model: pl.LightningModule) -> Iterator[None]:
    """`monitor=` names a metric the module never logs (the default val/acc, for a task that is no classifier):
    Lightning says so at the end of the first epoch, with a traceback. Say it in one line, with what it does log."""
    try:
        yield
    except (MisconfigurationException, RuntimeError) as error:
        found = _UNLOGGED_MONITOR.search(str(error))
        if found is None:
            raise
        raise unlogged_monitor(found["checkpoint"] or found["early"], model, trainer.callback_metrics) from error


def unlogged_monitor(monitor: str, model: pl.LightningModule, metrics: Mapping[str, object]) -> UserError:
    """The line for a `monitor=` the module does not log, naming what it does log."""
    logged = [name for name in metrics if name not in ("epoch", "step")]
    example = next((name for name in logged if name.startswith("val")), "<metric>")
    return UserError(
        f"monitor={monitor!r}: {type(model).__name__} logs no metric of that name (it logs: "
        f"{', '.join(logged) or 'nothing'}). Choose one it logs, with its direction: monitor={example} mode=min "
        "(a loss, an error) or mode=max (an accuracy)."
    )


class TrainingStarts(pl.Callback):
    """Marks the run dir as this run's work once training begins, after Lightning's setup and sanity check: a run
    refused before (a batch larger than the split, a monitor it does not log, a signal) leaves the dir as it was."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        training_started()


class MonitorLogged(pl.Callback):
    """`monitor=` checked on Lightning's sanity check (a few validation batches before the first training step), so
    a mistyped name stops the run at once rather than after a whole epoch. A metric logged only in training (train/...)
    cannot be seen there and is left to the end of the first epoch."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logged = trainer.callback_metrics
        if self.monitor in logged or self.monitor.startswith("train") or not logged:
            return
        raise unlogged_monitor(self.monitor, pl_module, logged)


@contextmanager
def batch_of_one_is_a_clear_error(cfg: DictConfig) -> Iterator[None]:
    """A data module of the user's own hands BatchNorm a training batch of one sample (a split that leaves one over;
    the library's own drop it): torch's ValueError, with a traceback, at that step of every epoch. One line instead."""
    try:
        yield
    except ValueError as error:
        if "Expected more than 1 value per channel when training" not in str(error):
            raise
        raise UserError(
            f"a training batch of one sample reached BatchNorm (data.batch_size={cfg.data.get('batch_size')!r} leaves "
            "one sample over in the last batch). Choose a batch size that does not, or drop the last batch in your "
            "train_dataloader (DataLoader(..., drop_last=True))."
        ) from error


def train(cfg: DictConfig) -> float | None:
    """Train per `cfg`; returns `cfg.optimized_metric` from the final metrics (None if it was not logged)."""
    built: list[pl.Trainer] = []  # the trainer once built: what a signal's line says is saved depends on it
    with stops_cleanly(lambda: how_to_continue(cfg, built[0]) if built else NOTHING_SAVED):
        return fit_and_test(cfg, built)


def fit_and_test(cfg: DictConfig, built: list[pl.Trainer]) -> float | None:
    """train()'s work; the trainer goes into `built` as soon as it exists."""
    check_elastic_restarts()
    validate_targets(cfg)  # every `_target_`'s arguments against its signature, before anything is built
    quiet_console()
    if cfg.get("print_config"):
        print_config_tree(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    model = instantiate(cfg.model)
    if not model.automatic_optimization:  # a module that steps its own optimizers (a GAN)
        from hydralight.core.switch_checks import check_manual_optimization

        check_manual_optimization(cfg, model)
    if cfg.get("compile"):
        from hydralight.core.compiling import compile_networks, compiled_state

        compile_networks(model)  # lazy: each network compiles at its first call, after any sharding of it
        info("Model: %s, %s", cfg.model._target_, compiled_state(model))
    else:
        info("Model: %s", cfg.model._target_)
    loggers = build_loggers(cfg.get("logger"))
    preemption = Preemption()
    callbacks = build_callbacks(cfg.get("callbacks"), cfg.paths.output_dir, bool(loggers), cfg.get("monitor"))
    callbacks += [ResumeState(), preemption]  # what bitwise resume and a clean preemption need, whatever the config
    callbacks.append(TaskRecord(cfg.data))  # which module and data: what eval, predict and export rebuild
    callbacks.append(SeedTheTest(cfg.seed))  # the test starts from the run's seed, as eval.py's does
    if cfg.get("monitor"):
        callbacks.append(MonitorLogged(cfg.monitor))
    callbacks.append(TrainingStarts())
    trainer = build_trainer(cfg, callbacks, loggers)
    built.append(trainer)
    if not model.automatic_optimization:
        from hydralight.core.switch_checks import find_unused_parameters_for

        find_unused_parameters_for(trainer, model)
    if trainer.precision == "16-true":
        from hydralight.core.switch_checks import check_half_precision

        check_half_precision(cfg, trainer)
    ckpt_path = resume_checkpoint(cfg, trainer, model)
    if cfg.get("init_from") is not None and ckpt_path is None:  # a resumed run has its own weights by now
        init_from_checkpoint(model, cfg.init_from, strict=cfg.get("init_from_strict", True))
    if trainer.is_global_zero:  # the run dir is this run's alone (its lock): what a killed run left half-written goes
        for leftover in remove_partials(cfg.paths.output_dir) + remove_partials(checkpoint_dir(trainer)):
            info("Removed %s, a file a killed run left half-written", leftover)
    continue_logging(loggers, cfg.paths.output_dir, ckpt_path)  # a resumed run: the same logger runs as before
    write_provenance(cfg.paths.output_dir)  # packages, machine, command, commit and diff: provenance/<start>/
    log_hyperparameters(loggers, cfg)
    info("Training")
    with (
        disk_full_is_a_clear_error(trainer),
        ctrl_c_is_a_clear_stop(cfg, trainer),
        unlogged_monitor_is_a_clear_error(trainer, model),
        batch_of_one_is_a_clear_error(cfg),
        out_of_memory_is_a_clear_error(cfg),
    ):
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException as stop:
            saved = f"saved {preemption.saved}" if preemption.saved else "nothing to save yet"
            raise Preempted(
                f"stopped by a signal at step {trainer.global_step}, {saved}. "
                "Re-run the same command (same run dir, resume=auto) to continue."
            ) from stop
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}

        for name, value in best_metrics(trainer, cfg.get("monitor")).items():
            metrics.setdefault(name, value)  # the sweep metric; a module's own `<monitor>_best` comes first
        checkpointer = monitoring_checkpoint(trainer, cfg.get("monitor"))
        if cfg.get("test"):
            best = checkpointer.best_model_path if checkpointer is not None else ""
            if not best:
                info("No checkpoint of the best %s (none monitors it): testing the weights as they are now.",
                     cfg.get("monitor"))  # fmt: skip
            info("Testing %s", best or "the current weights")
            try:
                trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            except SIGTERMException as stop:
                raise Preempted(
                    "stopped by a signal while testing. Training is finished and saved: the same command (resume=auto) "
                    "tests it again."
                ) from stop
            metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})

    close_run()
    info("Final metrics: %s", metrics)
    print_final_metrics(metrics, cfg.paths.output_dir)
    return metrics.get(cfg.get("optimized_metric"))
