"""Entrypoints: compose the config with Hydra, turn user errors into one clear line, and call the task.

Only hydra and omegaconf are imported here: `--help`, `--cfg job` and config errors never load torch.
"""

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig
from omegaconf.errors import InterpolationKeyError, InterpolationResolutionError

from hydralight.core.errors import Interrupted, Preempted, RunStopped, UserError
from hydralight.core.resolvers import in_multirun, register_resolvers
from hydralight.core.runs.guard import undo_refused_run
from hydralight.core.validation import validate

log = logging.getLogger(__name__)
USER_ERROR_EXIT_CODE = UserError.exit_code


def config_dir() -> str:
    """The project's `conf/`: beside the entry script (`python train.py` in the project), else in the dir the command
    starts in (the installed `hydralight-train`). The library's own groups come through Hydra's search path
    (hydra_plugins.hydralight_searchpath)."""
    script_dir = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else Path.cwd()
    for candidate in (script_dir / "conf", Path.cwd() / "conf"):
        if candidate.is_dir():
            return str(candidate)
    raise UserError(
        f"no conf/ directory beside {sys.argv[0] or 'the command'} or in {Path.cwd()}: run the project's train.py (or "
        "the hydralight-* commands) from the project's root, where conf/ holds its configs."
    )


def _resolver_errors_unwrapped(task: Callable[[DictConfig], object], cfg: DictConfig) -> object:
    """`task(cfg)`; a RunStopped raised by a resolver (e.g. `${prepared:...}` finding no dataset) is raised as it is,
    not inside omegaconf's InterpolationResolutionError, so that it too becomes its one line."""
    try:
        return task(cfg)
    except InterpolationResolutionError as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, RunStopped):  # omegaconf nests its errors
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        if isinstance(error, InterpolationKeyError):
            raise UserError(mismatch_message(error)) from error
        raise


def mismatch_message(error: InterpolationKeyError) -> str:
    """`${data.input_shape}` in the model's config, and a data module that has no such key: the options chosen do
    not fit together. Names the key, what it reads and the options chosen."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    chosen = ", ".join(f"{group}={choices[group]}" for group in ("model", "data", "experiment") if choices.get(group))
    reason = str(error.msg).splitlines()[0]
    return (
        f"{error.full_key}: {reason}. The options chosen ({chosen or 'the defaults'}) do not fit together: one reads "
        "a key the other does not have. Choose a model and data made for each other (an experiment=<name> sets "
        "both), or give the key."
    )


def stopped_by_ctrl_c() -> None:
    """Ctrl-C before training started (while composing, importing, building): one line and exit 130."""
    print(f"{Interrupted.prefix}: stopped by Ctrl-C before training started; nothing was kept.", file=sys.stderr)
    sys.exit(Interrupted.exit_code)


def report_user_errors(task: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
    """Run `task`; a RunStopped (user error, divergence, preemption) becomes one line on stderr and its exit code."""

    def wrapped(cfg: DictConfig) -> object:
        try:
            return _resolver_errors_unwrapped(task, cfg)
        except RunStopped as stop:
            if in_multirun() and not isinstance(stop, Preempted | Interrupted):  # these end the whole sweep
                raise  # the sweep goes on: hydralight.core.sweeps reports the job and exits non-zero at the end
            undo_refused_run()  # stopped before training: the run dir is left as it was (no-op once training began)
            print(f"{stop.prefix}: {stop}", file=sys.stderr)
            sys.exit(stop.exit_code)
        except KeyboardInterrupt:  # before training (train() turns a later Ctrl-C into Interrupted)
            undo_refused_run()
            stopped_by_ctrl_c()

    wrapped.__name__ = task.__name__
    return wrapped


def _train(cfg: DictConfig) -> float | None:
    validate(cfg, ckpt_required=False)
    from hydralight.core.train import train  # heavy: torch + lightning

    return train(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, float]:
    validate(cfg, ckpt_required=True)
    from hydralight.core.evaluate import evaluate

    return evaluate(cfg)


def _check_output(cfg: DictConfig, example: str) -> None:
    """An explicit `output=` that is a directory, or a file already there (without overwrite=true), stops here."""
    if cfg.get("output"):
        from hydralight.core.runs.outputs import check_output  # predict and export only

        check_output(cfg.output, cfg.get("overwrite", False), cfg.ckpt_path, example=example)


def _predict(cfg: DictConfig) -> dict[str, float]:
    from hydralight.core.switch_checks import validate_inference

    validate_inference(cfg, device=("auto", "cpu", "cuda"))
    _check_output(cfg, example="predictions.csv")
    from hydralight.core.predict import predict

    return predict(cfg)


def _export(cfg: DictConfig) -> dict[str, object]:
    from hydralight.core.switch_checks import validate_inference

    validate_inference(cfg, format=("torchscript", "exported_program", "onnx"))
    _check_output(cfg, example="model.pt")
    from hydralight.core.export import export

    return export(cfg)


def _prepare(cfg: DictConfig) -> dict[str, object]:
    from hydralight.core.prepare import prepare  # heavy: torch, datasets

    return prepare(cfg)


def unchosen_groups(conf: str, config_name: str, groups: Sequence[str], argv: Sequence[str]) -> list[str]:
    """Those of `groups` that neither the command line (`argv`: its overrides) nor `<config_name>.yaml` chooses: a
    default of `???` (a copy made without the examples), an `optional` default whose file is gone (an example
    deleted), or none at all. An `experiment=` chooses its own (Hydra names what it leaves unset)."""
    import yaml  # omegaconf's own YAML reader; OmegaConf.load would read `???` as a missing value

    chosen = {arg.split("=", 1)[0].lstrip("+~/") for arg in argv if "=" in arg}
    if "experiment" in chosen:
        return []
    primary = Path(conf) / f"{config_name}.yaml"
    entries = (yaml.safe_load(primary.read_text()) or {}).get("defaults", []) if primary.is_file() else []
    defaults = {
        key.split()[-1]: (key, choice) for entry in entries if isinstance(entry, dict) for key, choice in entry.items()
    }

    def chosen_by_default(group: str) -> bool:
        key, choice = defaults.get(group, ("", "???"))
        optional_gone = key.startswith("optional ") and not (Path(conf) / group / f"{choice}.yaml").is_file()
        return choice not in ("???", None) and not optional_gone

    return [group for group in groups if group not in chosen and not chosen_by_default(group)]


def check_group_keys(conf: str, argv: Sequence[str]) -> None:
    """`model.optimizer=adamw` where `model/optimizer` is a config group: Hydra would try to set the key to a string
    and say "dictionary update sequence element #0 has length 1". Say which spelling chooses the option."""
    from hydralight.conf import LIBRARY_CONFIG_DIR

    for arg in argv:
        key, _, value = arg.partition("=")
        group = key.replace(".", "/")
        if "." not in key or key[:1] in "+~" or not value:
            continue
        folders = [Path(root) / group for root in (conf, LIBRARY_CONFIG_DIR) if (Path(root) / group).is_dir()]
        if folders:
            options = sorted({path.stem for folder in folders for path in folder.glob("*.yaml")})
            raise UserError(
                f"{arg}: {group} is a config group, and `{key}=` sets a key inside the current choice. To choose an "
                f"option of the group write {group}={value} (a / for the .); its options: {', '.join(options)}."
            )


def check_task_chosen(conf: str, config_name: str, argv: Sequence[str]) -> None:
    """`python train.py` in a project with no task of its own yet, or `python prepare.py` with no source: one line
    saying what to choose or add, in place of Hydra's "You must specify" or an error at build time."""
    required = {"train": ("data", "model"), "prepare": ("source",)}.get(config_name, ())
    missing = unchosen_groups(conf, config_name, required, argv)
    if not missing:
        return
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else f"{config_name}.py"
    options = {group: sorted(path.stem for path in (Path(conf) / group).glob("*.yaml")) for group in missing}
    have = "; ".join(f"{group}=<{'|'.join(names)}>" for group, names in options.items() if names)
    unset = f"no {' and no '.join(missing)} chosen, and {config_name}.yaml has no default"
    if config_name != "train":
        raise UserError(f"{unset}: choose one ({have or 'conf/' + missing[0] + '/ has none'})")
    raise UserError(
        f"{unset}: "
        + (f"choose one ({have}), or add your own: " if have else "this project has no task yet. Add ")
        + "a LightningModule with conf/model/<name>.yaml and a LightningDataModule with conf/data/<name>.yaml "
        f'(README "Add a task"), then: python {script} model=<name> data=<name> monitor=<metric> mode=min|max'
    )


def _printed_help(conf: str, config_name: str) -> bool:
    """`--help` answered here, as Hydra would (Hydra's own takes ~2 s); False when it is Hydra's to answer."""
    from hydralight.core.helptext import fast_help  # only a command line with flags can ask for help

    help_text = fast_help(conf, config_name, Path(__file__).stem, sys.argv[1:])
    if help_text is None:
        return False
    try:
        print(help_text)
        sys.stdout.flush()  # now, not at exit, so that a reader that stopped early is handled here
    except BrokenPipeError:
        # `--help | head`: the reader has all it wanted. As Python's docs advise (signal module, "Note on
        # SIGPIPE"), point stdout at devnull so the flush at exit cannot fail again, and exit 1 as Python does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    return True


def _hydra_main(task: Callable[[DictConfig], object], config_name: str) -> None:
    try:
        conf = config_dir()
        overrides = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
        check_group_keys(conf, overrides)
        if not {"--help", "-h"} & set(sys.argv[1:]):  # help needs no task: it lists the options to choose from
            check_task_chosen(conf, config_name, overrides)
    except UserError as error:  # before Hydra: no run dir exists yet
        print(f"{error.prefix}: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    register_resolvers()
    if any(arg.startswith("-") for arg in sys.argv[1:]) and _printed_help(conf, config_name):
        return
    main = hydra.main(config_path=conf, config_name=config_name, version_base="1.3")
    try:
        main(report_user_errors(task))()
    except KeyboardInterrupt:  # while Hydra composes, before the task runs
        stopped_by_ctrl_c()


def train_main() -> None:
    """`python train.py [overrides]` and the `hydralight-train` console script."""
    _hydra_main(_train, "train")


def eval_main() -> None:
    """`python eval.py ckpt_path=<file> [overrides]` and the `hydralight-eval` console script."""
    _hydra_main(_evaluate, "eval")


def predict_main() -> None:
    """`python predict.py ckpt_path=<file> [input=<file> | prompt=<text>]`; the `hydralight-predict` console script."""
    _hydra_main(_predict, "predict")


def export_main() -> None:
    """`python export.py ckpt_path=<file> [format=...]` and the `hydralight-export` console script."""
    _hydra_main(_export, "export")


def prepare_main() -> None:
    """`python prepare.py source=<digits|text|folder> [out=<dir>]` and the `hydralight-prepare` console script."""
    _hydra_main(_prepare, "prepare")
