"""Every option of every config group the library ships composes, passes the signature check and builds with
hydralight's own builders, on the testing project's regression; and the builders a module uses for its optimizer
and scheduler configs keep checkpoints plain. (A project's own groups: its tests/test_configs.py.)"""

import io
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import get_class, instantiate
from lightning.fabric.plugins.precision import precision as fabric_precision
from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

import hydralight
from hydralight.core.build import build_callbacks, build_datamodule, build_loggers, build_strategy, build_trainer
from hydralight.core.callbacks import MetricsJson
from hydralight.core.validation import PRECISIONS, validate_targets
from hydralight.modules import build, plain, with_scheduler
from hydralight.testing import QUICK, NetRegression

LIBRARY_CONFIG_DIR = Path(hydralight.__file__).parent / "conf"
GROUPS = ("tune", "strategy", "trainer", "callbacks", "logger", "debug", "cluster")
# Options whose packages come with an optional extra.
OPTIONAL_PACKAGES = {
    ("logger", "tensorboard"): ("tensorboard",),
    ("logger", "mlflow"): ("mlflow", "sqlalchemy", "alembic"),
    ("logger", "wandb"): ("wandb",),
    ("logger", "many"): ("tensorboard", "mlflow", "sqlalchemy", "alembic", "wandb"),
    ("callbacks", "plots"): ("matplotlib",),
    ("cluster", "local"): ("hydra_plugins.hydra_submitit_launcher",),
    ("cluster", "slurm"): ("hydra_plugins.hydra_submitit_launcher",),
}
CUDA = torch.cuda.is_available()
# Options that cannot build a Trainer without a CUDA GPU, and why.
NEEDS_CUDA = {
    ("trainer", "gpu"): "trainer=gpu: accelerator=gpu needs a CUDA GPU",
}
# What an option needs beside it: the value it asks for (???), here for the regression's TinyNet.
COMPANIONS = {("callbacks", "finetune"): ("callbacks.freeze.modules=[net.0]",)}
PLAIN_SCALARS = (str, int, float, bool, type(None))


def options(group: str) -> list[str]:
    """The options of a library config group: its yaml files (a new file is tested automatically)."""
    return sorted(path.stem for path in (LIBRARY_CONFIG_DIR / group).glob("*.yaml"))


def params(*groups: str) -> list:
    return [pytest.param(group, option, id=f"{group}={option}") for group in groups for option in options(group)]


def compose_option(make_cfg, group: str, option: str, *overrides: str) -> DictConfig:
    """make_cfg with `group=option`; QUICK's `~callbacks.<name>` deletions are left out where there are no callbacks."""
    quick = [o for o in QUICK if not (o.startswith("~callbacks.") and (group, option) == ("callbacks", "none"))]
    return make_cfg(*quick, f"{group}={option}", *overrides, quick=False)


def assert_plain(value: object, where: str = "hparams") -> None:
    """Only dict/list/tuple and str/int/float/bool/None, all the way down (what weights_only loading accepts)."""
    assert not isinstance(value, DictConfig | ListConfig | nn.Module), f"{where} is a {type(value).__name__}"
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{where} has a non-str key {key!r}"
            assert_plain(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            assert_plain(item, f"{where}[{index}]")
    else:
        assert isinstance(value, PLAIN_SCALARS), f"{where} is a {type(value).__name__}: {value!r}"


def test_every_group_has_options():
    """Option discovery finds the yaml files of every group (guards the parametrized tests against being empty)."""
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"
    assert {"auto", "ddp", "ddp_spawn", "dp", "fsdp", "model_parallel"} <= set(options("strategy"))


@pytest.mark.parametrize(("group", "option"), params(*GROUPS))
def test_option_composes_and_builds(make_cfg, group, option):
    """`train <group>=<option>` composes, passes the signature check of its `_target_`s, and its data, model,
    loggers, callbacks and Trainer build."""
    for package in OPTIONAL_PACKAGES.get((group, option), ()):
        pytest.importorskip(package)  # an optional extra: CI installs it
    cfg = compose_option(make_cfg, group, option, *COMPANIONS.get((group, option), ()))
    validate_targets(cfg)  # no option a user can pick is refused by it

    datamodule = build_datamodule(cfg.data)
    assert isinstance(datamodule, LightningDataModule)
    assert isinstance(datamodule, get_class(cfg.data._target_))
    model = instantiate(cfg.model)
    assert isinstance(model, get_class(cfg.model._target_))
    assert isinstance(model.net, get_class(cfg.model.net._target_))

    loggers = build_loggers(cfg.get("logger"))
    assert [type(logger) for logger in loggers] == [get_class(entry._target_) for entry in (cfg.logger or {}).values()]
    callbacks = build_callbacks(cfg.get("callbacks"), cfg.paths.output_dir, has_logger=bool(loggers))
    expected = [get_class(entry._target_) for entry in (cfg.callbacks or {}).values() if entry]
    if not loggers:
        expected = [cls for cls in expected if not issubclass(cls, LearningRateMonitor)]
    assert [type(callback) for callback in callbacks] == [*expected, MetricsJson]

    if (group, option) in NEEDS_CUDA and not CUDA:
        pytest.skip(f"{NEEDS_CUDA[group, option]}; this machine has none (composition and the model were checked)")
    trainer = build_trainer(cfg, callbacks, loggers)
    strategy = cfg.strategy
    if "_target_" in strategy:
        assert isinstance(trainer.strategy, get_class(strategy._target_))
    for callback in callbacks:
        assert callback in trainer.callbacks
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize(("group", "option"), params("strategy"))
def test_strategy_option_builds(group, option, make_cfg):
    """build_strategy turns each strategy option into a Strategy (or Lightning's "auto")."""
    cfg = make_cfg(f"strategy={option}")
    if "_target_" not in cfg.strategy:
        assert build_strategy(cfg.strategy) == cfg.strategy.get("name", "auto")
        return
    assert isinstance(build_strategy(cfg.strategy), get_class(cfg.strategy._target_))


def test_eval_config_composes(make_cfg, tmp_path):
    """eval.yaml composes with every default group, requires ckpt_path, and builds its trainer."""
    cfg = make_cfg(config_name="eval")
    assert cfg.task_name == "eval"
    assert OmegaConf.is_missing(cfg, "ckpt_path")  # ???: the user must give it
    cfg = make_cfg(f"ckpt_path={tmp_path / 'x.ckpt'}", config_name="eval")
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(cfg.get("callbacks"), cfg.paths.output_dir, has_logger=bool(loggers))
    build_trainer(cfg, callbacks, loggers)


def test_precisions_match_lightning():
    """hydralight.core.validation.PRECISIONS is exactly the set of values Lightning's Trainer accepts."""
    lightning_values = {
        *typing.get_args(fabric_precision._PRECISION_INPUT_STR),
        *typing.get_args(fabric_precision._PRECISION_INPUT_STR_ALIAS),
        *typing.get_args(fabric_precision._PRECISION_INPUT_INT),
    }
    assert len(PRECISIONS) == len(set(PRECISIONS))
    assert set(PRECISIONS) == lightning_values


OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.0123, "betas": [0.9, 0.99], "eps": 1e-7}
SCHEDULERS = {  # as a project's conf/model/scheduler/<name>.yaml holds them: the scheduler, then Lightning's keys
    "none": None,
    "onecycle": {"scheduler": {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "_partial_": True, "max_lr": 0.1},
                 "interval": "step"},
    "plateau": {"scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "_partial_": True,
                              "mode": "min"}, "interval": "epoch", "monitor": "val/loss"},
}  # fmt: skip


def test_an_optimizer_config_builds_that_optimizer_with_plain_settings():
    """build(<optimizer config>)(parameters): its class over every parameter with the config's lr and settings, none
    of them a ListConfig (it would land in the optimizer's state, and from there in every checkpoint)."""
    module = NetRegression()
    optimizer = build(OmegaConf.create(OPTIMIZER))(module.parameters())
    assert type(optimizer) is torch.optim.Adam
    (param_group,) = optimizer.param_groups
    assert len(param_group["params"]) == len(list(module.parameters()))
    for key, value in OPTIMIZER.items():
        if not key.startswith("_"):
            assert not isinstance(param_group[key], ListConfig), f"{key} kept a ListConfig"
            assert (list(param_group[key]) if isinstance(param_group[key], tuple) else param_group[key]) == value, key


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_a_scheduler_config_builds_that_scheduler_with_lightnings_keys(name):
    """with_scheduler: the optimizer alone without a scheduler, else Lightning's lr_scheduler dict: the scheduler on
    that optimizer, the config's other keys as they are, and the run's total steps where it takes them."""
    module = NetRegression()
    module.hparams.scheduler = plain(OmegaConf.create(SCHEDULERS[name])) if SCHEDULERS[name] else None
    module.trainer = SimpleNamespace(estimated_stepping_batches=40)  # all configure_optimizers reads of it
    optimizer = build(OmegaConf.create(OPTIMIZER))(module.parameters())
    configured = with_scheduler(module, optimizer)
    if SCHEDULERS[name] is None:
        assert configured is optimizer
        return
    assert configured["optimizer"] is optimizer
    scheduler = configured["lr_scheduler"]
    assert type(scheduler["scheduler"]) is get_class(SCHEDULERS[name]["scheduler"]["_target_"])
    assert scheduler["scheduler"].optimizer is optimizer
    assert {key: value for key, value in scheduler.items() if key != "scheduler"} == {
        key: value for key, value in SCHEDULERS[name].items() if key != "scheduler"
    }
    if name == "onecycle":
        assert scheduler["scheduler"].total_steps == 40  # from trainer.estimated_stepping_batches


def test_plain_hparams_survive_weights_only_loading():
    """plain(<a composed config>): dicts and lists only, all the way down, resolved; torch.load(weights_only=True)
    gives it back."""
    cfg = OmegaConf.create({"lr": 0.1, "optimizer": OPTIMIZER, "scheduler": SCHEDULERS["plateau"], "top": "${lr}"})
    hparams = plain(cfg)
    assert_plain(hparams)
    assert hparams["top"] == 0.1
    buffer = io.BytesIO()
    torch.save(hparams, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == hparams
