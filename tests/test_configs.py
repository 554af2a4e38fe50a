"""Every option of every config group composes and builds with hydralight's own builders; a smoke run per option."""

import io
import json
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import get_class, instantiate
from lightning.fabric.plugins.precision import precision as fabric_precision
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from hydralight.core.build import build_callbacks, build_datamodule, build_loggers, build_strategy, build_trainer
from hydralight.core.callbacks import MetricsJson
from hydralight.core.errors import UserError
from hydralight.core.train import train
from hydralight.core.validation import PRECISIONS, validate_targets
from tests.conftest import CONFIG_DIR, LIBRARY_CONFIG_DIR, TINY

# Options whose packages come with an optional extra.
OPTIONAL_PACKAGES = {
    ("logger", "tensorboard"): ("tensorboard",),
    ("logger", "mlflow"): ("mlflow", "sqlalchemy", "alembic"),
    ("logger", "wandb"): ("wandb",),
    ("logger", "many"): ("tensorboard", "mlflow", "sqlalchemy", "alembic", "wandb"),
    ("callbacks", "plots"): ("matplotlib",),
}
GROUPS = (
    "tune",
    "data",
    "model/net",
    "model/optimizer",
    "model/scheduler",
    "strategy",
    "trainer",
    "callbacks",
    "logger",
    "debug",
    "experiment",
)
CUDA = torch.cuda.is_available()
# Options that cannot build a Trainer without a CUDA GPU, and why.
NEEDS_CUDA = {
    ("trainer", "gpu"): "trainer=gpu: accelerator=gpu needs a CUDA GPU",
}
PLAIN_SCALARS = (str, int, float, bool, type(None))
# Options that only make sense with another (a text data module feeds a language model, not the classifier).
COMPANIONS = {
    ("data", "shakespeare"): ("model=gpt",),  # copier:if gpt_example
    ("callbacks", "finetune"): ("callbacks.freeze.modules=[net.layers.1]",),  # the value it asks for (???)
    ("data", "ondisk"): ("experiment=ondisk_images",),  # the experiment gives the net its shape from the data
}
# Options that read a dataset prepare.py wrote (data.path): the session fixture that prepares it.
PREPARED = {
    ("data", "ondisk"): "prepared_digits",
    ("experiment", "ondisk_images"): "prepared_digits",
    ("experiment", "ondisk_text"): "prepared_text",  # copier:if gpt_example
}


def companions(request: pytest.FixtureRequest, group: str, option: str) -> tuple[str, ...]:
    """What `group=option` needs beside it: its COMPANIONS, and the path of its prepared dataset."""
    fixture = PREPARED.get((group, option))
    if fixture is None:
        return COMPANIONS.get((group, option), ())
    return (*COMPANIONS.get((group, option), ()), f"data.path={request.getfixturevalue(fixture)}")


def options(group: str) -> list[str]:
    """The options of a config group: the yaml files in conf/<group>/ and in the library's (a new file is tested
    automatically)."""
    return sorted(
        {path.stem for root in (CONFIG_DIR, LIBRARY_CONFIG_DIR) for path in (Path(root) / group).glob("*.yaml")}
    )


def params(*groups: str) -> list:
    return [pytest.param(group, option, id=f"{group}={option}") for group in groups for option in options(group)]


def compose_option(make_cfg, group: str, option: str, *overrides: str) -> DictConfig:
    """make_cfg with `group=option`; TINY's `~callbacks.<name>` deletions are left out where there are no callbacks."""
    tiny = [o for o in TINY if not (o.startswith("~callbacks.") and (group, option) == ("callbacks", "none"))]
    return make_cfg(*tiny, f"{group}={option}", *overrides, tiny=False)


def attach_fake_trainer(model: LightningModule, stepping_batches: int = 40) -> None:
    """configure_optimizers reads trainer.estimated_stepping_batches (OneCycleLR's total_steps); nothing else."""
    model.trainer = SimpleNamespace(estimated_stepping_batches=stepping_batches)


def optimizer_and_scheduler(model: LightningModule) -> tuple[torch.optim.Optimizer, dict | None]:
    """What Lightning gets from configure_optimizers: an optimizer, or {"optimizer", "lr_scheduler"}."""
    attach_fake_trainer(model)
    configured = model.configure_optimizers()
    if isinstance(configured, torch.optim.Optimizer):
        return configured, None
    return configured["optimizer"], configured["lr_scheduler"]


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
    assert {"adam", "sgd"} <= set(options("model/optimizer"))


@pytest.mark.parametrize(("group", "option"), params(*GROUPS))
def test_option_composes_and_builds(make_cfg, group, option, request):
    """`train <group>=<option>` composes, passes the signature check of its `_target_`s, and its data, model,
    optimizer, loggers, callbacks and Trainer build."""
    for package in OPTIONAL_PACKAGES.get((group, option), ()):
        pytest.importorskip(package)  # an optional extra: CI installs it
    cfg = compose_option(make_cfg, group, option, *companions(request, group, option))
    validate_targets(cfg)  # no option a user can pick is refused by it

    datamodule = build_datamodule(cfg.data)
    assert isinstance(datamodule, LightningDataModule)
    assert isinstance(datamodule, get_class(cfg.data._target_))

    model = instantiate(cfg.model)
    assert isinstance(model, get_class(cfg.model._target_))
    if "net" in cfg.model:  # a module built around a plain network config (the classifier)
        assert isinstance(model.net, get_class(cfg.model.net._target_))
    optimizer, scheduler = optimizer_and_scheduler(model)
    assert isinstance(optimizer, get_class(cfg.model.optimizer._target_))
    if cfg.model.get("scheduler"):
        assert isinstance(scheduler["scheduler"], get_class(cfg.model.scheduler.scheduler._target_))
    else:
        assert scheduler is None

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


def test_mnist_datamodule_needs_no_files_until_prepare_data(make_cfg, tmp_path):
    """data=mnist instantiates without files; prepare_data without files or download is a UserError naming
    data.data_dir (and never downloads)."""
    cfg = make_cfg("data=mnist", f"data.data_dir={tmp_path / 'empty'}")
    datamodule = build_datamodule(cfg.data)
    assert datamodule.download is False
    with pytest.raises(UserError, match=r"data\.data_dir"):
        datamodule.prepare_data()
    assert not (tmp_path / "empty").exists()


def test_eval_config_composes(make_cfg, tmp_path):
    """eval.yaml composes with every default group, requires ckpt_path, and builds its trainer."""
    cfg = make_cfg(config_name="eval")
    assert cfg.task_name == "eval"
    assert OmegaConf.is_missing(cfg, "ckpt_path")  # ???: the user must give it
    cfg = make_cfg(f"ckpt_path={tmp_path / 'x.ckpt'}", config_name="eval")
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(cfg.get("callbacks"), cfg.paths.output_dir, has_logger=bool(loggers))
    build_trainer(cfg, callbacks, loggers)


@pytest.mark.parametrize(
    ("group", "option"), params("model/net", "model/optimizer", "model/scheduler", "data", "experiment")
)
def test_saved_hparams_are_plain_containers(make_cfg, group, option, request):
    """The model's hparams hold only plain python containers and survive torch.load(weights_only=True)."""
    model = instantiate(make_cfg(f"{group}={option}", *companions(request, group, option)).model)
    for hparams in (dict(model.hparams), dict(model.hparams_initial)):
        assert_plain(hparams)
        buffer = io.BytesIO()
        torch.save(hparams, buffer)
        buffer.seek(0)
        assert torch.load(buffer, weights_only=True) == hparams


def test_precisions_match_lightning():
    """hydralight.core.validation.PRECISIONS is exactly the set of values Lightning's Trainer accepts."""
    lightning_values = {
        *typing.get_args(fabric_precision._PRECISION_INPUT_STR),
        *typing.get_args(fabric_precision._PRECISION_INPUT_STR_ALIAS),
        *typing.get_args(fabric_precision._PRECISION_INPUT_INT),
    }
    assert len(PRECISIONS) == len(set(PRECISIONS))
    assert set(PRECISIONS) == lightning_values


@pytest.mark.parametrize(("group", "option"), params("model/optimizer"))
def test_optimizer_option_builds_that_optimizer(make_cfg, group, option):
    """Each optimizer option builds its class over the model's parameters with the configured lr and settings."""
    cfg = make_cfg(f"model/optimizer={option}", "model/scheduler=none", "model.optimizer.lr=0.0123")
    model = instantiate(cfg.model)
    optimizer, scheduler = optimizer_and_scheduler(model)
    assert scheduler is None
    assert type(optimizer) is get_class(cfg.model.optimizer._target_)
    (param_group,) = optimizer.param_groups
    assert param_group["lr"] == pytest.approx(0.0123)
    assert len(param_group["params"]) == len(list(model.parameters()))
    for key, value in cfg.model.optimizer.items():
        if not key.startswith("_") and key != "lr":
            built = param_group[key]
            assert not isinstance(built, ListConfig), f"{key} kept a ListConfig (it would land in checkpoints)"
            assert (list(built) if isinstance(built, tuple | list) else built) == value, key


@pytest.mark.parametrize(("group", "option"), params("model/scheduler"))
def test_scheduler_option_builds_that_scheduler(make_cfg, group, option):
    """Each scheduler option builds its scheduler on the model's optimizer, with Lightning's interval/monitor keys."""
    cfg = make_cfg(f"model/scheduler={option}")
    optimizer, scheduler = optimizer_and_scheduler(instantiate(cfg.model))
    if not cfg.model.get("scheduler"):
        assert scheduler is None
        return
    assert type(scheduler["scheduler"]) is get_class(cfg.model.scheduler.scheduler._target_)
    assert scheduler["scheduler"].optimizer is optimizer
    for key, value in cfg.model.scheduler.items():
        if key != "scheduler":
            assert scheduler[key] == value
    if option == "onecycle":
        assert scheduler["scheduler"].total_steps == 40  # from trainer.estimated_stepping_batches


def smoke_cases() -> list:
    """Every net, each paired with every scheduler and every optimizer once (not the full cross product)."""
    optimizers, schedulers = options("model/optimizer"), options("model/scheduler")
    runs = max(len(optimizers), len(schedulers))
    cases = [
        (net, optimizers[i % len(optimizers)], schedulers[i % len(schedulers)])
        for net in options("model/net")
        for i in range(runs)
    ]
    return [pytest.param(*case, id="-".join(case)) for case in cases]


@pytest.mark.parametrize(("net", "optimizer", "scheduler"), smoke_cases())
def test_fast_dev_run_with_each_net_optimizer_and_scheduler(make_cfg, net, optimizer, scheduler):
    """train() with debug=fdr runs for every net, optimizer and scheduler and writes metrics.json."""
    cfg = make_cfg("debug=fdr", f"model/net={net}", f"model/optimizer={optimizer}", f"model/scheduler={scheduler}")
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert {"test/acc", "test/loss"} <= metrics.keys()
    assert all(isinstance(value, float) for value in metrics.values())
