"""The error contract: a user error exits non-zero with one clear message on stderr (key, value, valid choices) and
no Python traceback; config errors never import torch; a failed run leaves earlier runs alone. The runs are
hydralight.testing's project (its regression, and its stateful task where a case needs an optimizer, a net with
dropout or the library's in-memory data module)."""

import os
from pathlib import Path

import pytest
import torch
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from hydralight.core import cli
from hydralight.core.cli import USER_ERROR_EXIT_CODE
from hydralight.core.errors import UserError
from hydralight.testing import assert_ok, run_cli

CUDA = torch.cuda.is_available()
needs_no_cuda = pytest.mark.skipif(CUDA, reason="this machine has CUDA: the no-GPU error cannot happen here")

# Our own validation (UserError): exit code 2 exactly. Hydra's composition errors: any non-zero code.
OURS, HYDRA = USER_ERROR_EXIT_CODE, None
STATEFUL = ["model=stateful", "data=stateful"]  # Adam, a net with dropout, InMemoryDataModule (loaders, k-fold)

# (script, args, exit code, substrings stderr must contain). "{tmp}" becomes the test's tmp_path.
CASES = {
    # Unknown group options: Hydra names the group, the option and lists the available ones.
    "strategy=foo": ("train.py", ["strategy=foo"], HYDRA, ["strategy", "foo", "auto", "ddp", "dp", "fsdp"]),
    "logger=foo": ("train.py", ["logger=foo"], HYDRA, ["logger", "foo", "csv", "tensorboard", "mlflow", "wandb"]),
    "data=cifar": ("train.py", ["data=cifar"], HYDRA, ["data", "cifar", "regression", "stateful"]),
    # Unknown keys (open set: no choices to list, but the key and how to add it).
    "trainer.max_epoch=3": ("train.py", ["trainer.max_epoch=3"], HYDRA, ["trainer.max_epoch", "+trainer.max_epoch=3"]),
    "foo=1": ("train.py", ["foo=1"], HYDRA, ["'foo'", "+foo=1"]),
    # Wrong types and values, caught by hydralight.core.validation before torch is imported.
    "trainer.max_epochs=abc": ("train.py", ["trainer.max_epochs=abc"], OURS, ["trainer.max_epochs", "'abc'", ">= 1"]),
    "precision=8-mixed": (
        "train.py",
        ["precision=8-mixed"],
        OURS,
        ["precision", "'8-mixed'", "32-true", "16-mixed", "bf16-mixed", "64-true"],
    ),
    "accumulate_grad_batches=0": (
        "train.py",
        ["accumulate_grad_batches=0"],
        OURS,
        ["accumulate_grad_batches=0", ">= 1"],
    ),
    "accumulate_grad_batches=-2": (
        "train.py",
        ["accumulate_grad_batches=-2"],
        OURS,
        ["accumulate_grad_batches=-2", ">= 1"],
    ),
    "gradient_clip_val=-1": ("train.py", ["gradient_clip_val=-1"], OURS, ["gradient_clip_val=-1", ">= 0", "null"]),
    "gradient_clip_algorithm=median": (
        "train.py",
        ["gradient_clip_algorithm=median"],
        OURS,
        ["gradient_clip_algorithm", "'median'", "norm", "value"],
    ),
    "seed=abc": ("train.py", ["seed=abc"], OURS, ["seed", "'abc'", "whole number"]),
    "seed=-1": ("train.py", ["seed=-1"], OURS, ["seed=-1", "from 0 to 4294967295"]),  # numpy's bound, not a traceback
    "seed=2**32": ("train.py", ["seed=4294967296"], OURS, ["seed=4294967296", "from 0 to 4294967295"]),
    "patience=-1": (
        "train.py",
        ["callbacks=early_stopping", "callbacks.early_stopping.patience=-1"],
        OURS,
        ["callbacks.early_stopping.patience=-1", ">= 0"],
    ),
    "float32_matmul_precision=low": (
        "train.py",
        ["float32_matmul_precision=low"],
        OURS,
        ["float32_matmul_precision", "'low'", "highest", "high", "medium"],
    ),
    "cpu_threads=0": ("train.py", ["cpu_threads=0"], OURS, ["cpu_threads=0", ">= 1", "null"]),
    "keep_freed_memory=sometimes": (
        "train.py",
        ["keep_freed_memory=sometimes"],
        OURS,
        ["keep_freed_memory='sometimes'", "true or false"],
    ),
    "async_checkpoint=maybe": (
        "train.py",
        ["async_checkpoint=maybe"],
        OURS,
        ["async_checkpoint='maybe'", "true or false"],
    ),
    "test=maybe": ("train.py", ["test=maybe"], OURS, ["test='maybe'", "true or false"]),
    "compile=sometimes": ("train.py", ["compile=sometimes"], OURS, ["compile='sometimes'", "true or false"]),
    "init_from_strict=perhaps": ("train.py", ["init_from_strict=perhaps"], OURS, ["init_from_strict='perhaps'"]),
    "trainer.limit_train_batches=0": (
        "train.py",
        ["trainer.limit_train_batches=0"],
        OURS,
        ["trainer.limit_train_batches=0 trains nothing", "untrained", "python eval.py ckpt_path=<file>"],
    ),
    "trainer.devices=0": ("train.py", ["trainer.devices=0"], OURS, ["trainer.devices=0", "'auto'"]),
    "data.batch_size=0": ("train.py", ["data.batch_size=0"], OURS, ["data.batch_size=0", ">= 1"]),
    # A `_target_`'s argument it does not take (checked against its signature after torch is imported), and a value
    # its constructor refuses while the model builds its net: still one line, exit 2.
    "+model.optimizer.weight_decy=0.1": (
        "train.py",
        [*STATEFUL, "+model.optimizer.weight_decy=0.1"],
        OURS,
        ["model.optimizer.weight_decy=0.1", "torch.optim.Adam", "did you mean weight_decay?"],
    ),
    "model.net.dropout=2": (
        "train.py",
        [*STATEFUL, "model.net.dropout=2"],
        OURS,
        ["model.net.dropout=2", "between 0 and 1"],
    ),
    "init_from=missing": ("train.py", ["init_from={tmp}/nope.ckpt"], OURS, ["init_from=", "nope.ckpt", "no such file"]),
    "init_from+ckpt_path": (
        "train.py",
        ["init_from={tmp}/garbage.ckpt", "ckpt_path={tmp}/garbage.ckpt"],
        OURS,
        ["init_from=", "ckpt_path=", "Give one of them"],
    ),
    "init_from=garbage": ("train.py", ["init_from={tmp}/garbage.ckpt"], OURS, ["init_from=", "not a checkpoint"]),
    "init_from_strict=maybe": (
        "train.py",
        ["init_from={tmp}/garbage.ckpt", "init_from_strict=maybe"],
        OURS,
        ["init_from_strict='maybe'", "true or false"],
    ),
    "callbacks=finetune without modules": (
        "train.py",
        ["callbacks=finetune"],
        OURS,
        ["callbacks.freeze.modules", "not given", "callbacks.freeze.modules=<value>"],
    ),
    "data.num_folds=1": ("train.py", [*STATEFUL, "data.num_folds=1"], OURS, ["data.num_folds=1", ">= 2", "null"]),
    "data.fold=5": ("train.py", [*STATEFUL, "data.num_folds=5", "data.fold=5"], OURS, ["data.fold=5", "0..4"]),
    "data.fold=2 without num_folds": ("train.py", [*STATEFUL, "data.fold=2"], OURS, ["data.fold=2", "num_folds"]),
    # Eval without a usable checkpoint.
    "eval:no-ckpt_path": ("eval.py", [], OURS, ["ckpt_path", "required", ".ckpt"]),
    "eval:ckpt_path=missing": (
        "eval.py",
        ["ckpt_path={tmp}/nope.ckpt"],
        OURS,
        ["ckpt_path=", "{tmp}/nope.ckpt", "no such file"],
    ),
    "eval:ckpt_path=dir": ("eval.py", ["ckpt_path={tmp}/a_dir"], OURS, ["ckpt_path=", "{tmp}/a_dir", "directory"]),
    "eval:ckpt_path=garbage": (
        "eval.py",
        ["ckpt_path={tmp}/garbage.ckpt"],
        OURS,
        ["ckpt_path=", "{tmp}/garbage.ckpt", "not a checkpoint"],
    ),
    "strategy.tensor_parallel_size=3": (
        "train.py",
        ["strategy=model_parallel", "trainer.devices=2", "strategy.tensor_parallel_size=3"],
        OURS,
        ["strategy.tensor_parallel_size=3", "trainer.num_nodes x trainer.devices = 2"],
    ),
    # What only torch/Lightning can tell: no GPU here.
    "trainer.accelerator=gpu": (
        "train.py",
        ["trainer.accelerator=gpu"],
        OURS,
        ["trainer.accelerator", "gpu", "cpu"],
    ),
    "trainer.accelerator=foo": (
        "train.py",
        ["trainer.accelerator=foo"],
        OURS,
        ["trainer.accelerator", "foo", "cpu", "auto"],
    ),
    "trainer.min_epochs=abc": ("train.py", ["trainer.min_epochs=abc"], OURS, ["trainer.min_epochs", "'abc'"]),
    "trainer.limit_train_batches=abc": (
        "train.py",
        ["trainer.limit_train_batches=abc"],
        OURS,
        ["trainer.limit_train_batches", "'abc'", "fraction"],
    ),
    # Lightning's own check, reached when the switch is bypassed: still one line, exit 2.
    "trainer.precision=8-mixed": ("train.py", ["trainer.precision=8-mixed"], OURS, ["8-mixed", "bf16-mixed"]),
    "data.num_workers=-1": ("train.py", [*STATEFUL, "data.num_workers=-1"], OURS, ["data.num_workers=-1", ">= 0"]),
    "train:ckpt_path=garbage": (
        "train.py",
        ["ckpt_path={tmp}/garbage.ckpt", "trainer.max_epochs=1"],
        OURS,
        ["ckpt_path=", "{tmp}/garbage.ckpt"],
    ),
}

MARKS = {
    "trainer.accelerator=gpu": [needs_no_cuda],
}


def make_bad_files(tmp_path: Path) -> None:
    """A directory and a file that is not a checkpoint, for the ckpt_path cases."""
    (tmp_path / "a_dir").mkdir(exist_ok=True)
    (tmp_path / "garbage.ckpt").write_bytes(bytes(range(256)) * 4)


def assert_user_error(result, exit_code: int | None, expected: list[str]) -> None:
    """Non-zero (or exactly `exit_code`), every expected substring on stderr, no traceback anywhere."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-4000:]
    if exit_code is None:
        assert result.returncode != 0, output[-4000:]
    else:
        assert result.returncode == exit_code, f"exit {result.returncode}\n{output[-4000:]}"
    for text in expected:
        assert text in result.stderr, f"{text!r} not in stderr:\n{result.stderr[-4000:]}"


# The command each script runs once Hydra has composed its config (cli.py): validation, then the task.
TASKS = {"train.py": ("train", cli._train), "eval.py": ("eval", cli._evaluate)}
# What the process boundary adds, checked as a user sees it: one of each kind of error, through the real CLI.
THROUGH_THE_CLI = (
    "strategy=foo", "precision=8-mixed", "+model.optimizer.weight_decy=0.1", "eval:ckpt_path=garbage",
)  # fmt: skip


def params(names) -> list:
    return [pytest.param(*CASES[name], id=name, marks=MARKS.get(name, ())) for name in names]


@pytest.mark.parametrize(("script", "args", "exit_code", "expected"), params(CASES))
def test_user_error_names_the_key_the_value_and_the_choices(make_cfg, tmp_path, script, args, exit_code, expected):
    """Each bad override, value or file is refused before training with a message holding key, value and choices
    (in-process: what the CLI prints is the message; the CLI contract itself is the test below)."""
    make_bad_files(tmp_path)
    args = [arg.format(tmp=tmp_path) for arg in args]
    config_name, task = TASKS[script]
    if exit_code is HYDRA:  # refused while composing
        with pytest.raises((HydraException, OmegaConfBaseException)) as refused:
            make_cfg(*args, config_name=config_name)
    else:
        with pytest.raises(UserError) as refused:
            task(make_cfg(*args, config_name=config_name))
        assert refused.value.exit_code == exit_code
    for text in expected:
        assert text.format(tmp=tmp_path) in str(refused.value), str(refused.value)


@pytest.mark.parametrize(("script", "args", "exit_code", "expected"), params(THROUGH_THE_CLI))
def test_user_error_is_one_clear_message(project, tmp_path, script, args, exit_code, expected):
    """Through the real CLI: non-zero exit (exactly 2 for our own checks), the message on stderr, no traceback."""
    make_bad_files(tmp_path)
    args = [arg.format(tmp=tmp_path) for arg in args]
    expected = [text.format(tmp=tmp_path) for text in expected]
    result = run_cli(script, *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=project, timeout=120)
    assert_user_error(result, exit_code, expected)


HEAVY_MODULES = ("torch", "lightning")


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        pytest.param(["--help"], 0, id="--help"),
        pytest.param(["--cfg", "job"], 0, id="--cfg-job"),
        pytest.param(["precision=8-mixed"], USER_ERROR_EXIT_CODE, id="config-error"),
    ],
)
def test_light_paths_never_import_torch(project, tmp_path, args, exit_code):
    """`--help`, `--cfg job` and a config error finish without importing torch or lightning (-X importtime; a
    fresh `python`, which hydralight.testing.warm starts for this environment)."""
    result = run_cli("train.py", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=project,
                     env={"PYTHONPROFILEIMPORTTIME": "1"})  # fmt: skip
    assert result.returncode == exit_code, result.stderr[-4000:]
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    ]
    assert "hydra" in imported and "omegaconf" in imported, "no importtime output: the check would be vacuous"
    heavy = [name for name in imported if any(module in name for module in HEAVY_MODULES)]
    assert not heavy, f"imported {heavy}"


def test_help_lists_the_groups(project):
    """`--help` succeeds and lists the config groups a user can pick from: the library's and the project's."""
    result = run_cli("train.py", "--help", cwd=project)
    assert_ok(result)
    for group in ("strategy", "logger", "callbacks", "model", "data", "trainer"):
        assert group in result.stdout


def snapshot(folder: Path) -> dict[Path, tuple[bytes | None, int]]:
    """Every path under `folder` with its bytes (files) and mtime."""
    return {
        path: (path.read_bytes() if path.is_file() else None, path.stat().st_mtime_ns) for path in folder.rglob("*")
    }


@pytest.mark.parametrize(
    ("script", "bad_args"),
    [
        pytest.param("train.py", ["strategy=foo"], id="hydra-composition-error"),
        pytest.param("train.py", ["precision=8-mixed"], id="validation-error"),
        pytest.param("eval.py", ["ckpt_path={earlier}/checkpoints/last.ckpt"], id="eval-unloadable-earlier-ckpt"),
        pytest.param(
            "train.py",
            ["ckpt_path={earlier}/checkpoints/last.ckpt", "trainer.max_epochs=1"],
            id="resume-unloadable-earlier-ckpt",
        ),
    ],
)
def test_failed_run_leaves_earlier_run_untouched(project, tmp_path, script, bad_args):
    """A failing command run beside an earlier run dir changes none of its files (bytes, mtime, listing)."""
    earlier = tmp_path / "runs" / "earlier"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "checkpoints" / "last.ckpt").write_bytes(b"not really a checkpoint\x00\x01\x02" * 100)
    (earlier / "metrics.json").write_text('{"test/loss": 0.5}\n')
    old = 1_000_000_000  # 2001: any write would move it
    for path in earlier.rglob("*"):
        os.utime(path, (old, old))
    before = snapshot(earlier)

    args = [arg.format(earlier=earlier) for arg in bad_args]
    result = run_cli(script, *args, f"hydra.run.dir={tmp_path / 'runs' / 'bad'}", cwd=project, timeout=120)

    assert result.returncode != 0, result.stderr[-4000:]
    assert snapshot(earlier) == before


def test_a_model_and_data_that_do_not_fit_together_is_one_line_and_leaves_no_run_dir(project):
    """A model config reading a data key the chosen data module lacks (`${data.<key>}`: the digits classifier with the
    text data, say) stops before training with one line naming the key and the options chosen, exit 2, and the run
    dir Hydra made is gone."""
    result = run_cli("train.py", "model.net.in_features=${data.vocab_size}", cwd=project, timeout=120)
    assert_user_error(result, 2, ["model.net.in_features", "data.vocab_size", "model=regression, data=regression",
                                  "do not fit together"])  # fmt: skip
    assert result.stderr.count("\n") == 1, result.stderr
    assert not list((project / "outputs").rglob("*.yaml")), "a refused run left its dir"


def test_ctrl_c_before_training_is_one_line_exit_130_and_no_run_dir(make_cfg, capsys, monkeypatch):
    """Ctrl-C while the run is still starting (importing, building): exit 130 with one line, the refused dir undone,
    no KeyboardInterrupt traceback."""
    undone = []
    monkeypatch.setattr(cli, "undo_refused_run", lambda: undone.append(True))

    def interrupted_while_starting(cfg):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stopped:
        cli.report_user_errors(interrupted_while_starting)(make_cfg())
    assert stopped.value.code == 130 and undone
    assert capsys.readouterr().err == "interrupted: stopped by Ctrl-C before training started; nothing was kept.\n"


@pytest.mark.parametrize(("arg", "group"), [("model.net=tiny", "model/net"), ("callbacks.x=default", None)])
def test_a_group_chosen_with_a_dot_says_to_write_a_slash(tmp_path, arg, group):
    """`model.net=tiny` where model/net is a config group: one line saying `model/net=tiny` chooses the option and
    listing the group's options (Hydra says "dictionary update sequence element #0 has length 1"). A dotted key
    that is no group passes on."""
    conf = tmp_path / "conf"
    (conf / "model" / "net").mkdir(parents=True)
    (conf / "model" / "net" / "tiny.yaml").write_text("hidden: 4\n")
    if group is None:
        cli.check_group_keys(str(conf), [arg])
        return
    with pytest.raises(UserError, match=rf"write {group}=tiny \(a / for the \.\); its options: tiny\.$"):
        cli.check_group_keys(str(conf), [arg])
