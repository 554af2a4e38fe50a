"""strategy=dp: the library's own DataParallel strategy (Lightning 2 removed its own), on hydralight.testing's
regression."""

import logging
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback, Trainer
from torch import nn

from hydralight.core.build import build_callbacks, build_datamodule, build_trainer
from hydralight.core.errors import UserError
from hydralight.core.evaluate import evaluate
from hydralight.core.strategies import DataParallelStrategy
from hydralight.core.train import train
from hydralight.testing import QUICK, NetRegression, TinyNet, compose
from hydralight.testing.blocks import BlockNet
from hydralight.testing.numerics import read_metrics

NO_CUDA_WARNING = "strategy=dp: no CUDA device"


class WrapProbe(Callback):
    """Records, per stage, the type of `pl_module.net` and the checkpoint keys the strategy would save."""

    def __init__(self) -> None:
        self.net_types: dict[str, set[type]] = {}
        self.saved_keys: set[str] = set()
        self.live_keys: set[str] = set()

    def _record(self, stage: str, trainer: Trainer, pl_module: pl.LightningModule) -> None:
        self.net_types.setdefault(stage, set()).add(type(pl_module.net))
        if stage == "train":
            self.live_keys |= set(pl_module.state_dict())
            self.saved_keys |= set(trainer.strategy.lightning_module_state_dict())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._record("train", trainer, pl_module)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._record("val", trainer, pl_module)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._record("test", trainer, pl_module)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._record("predict", trainer, pl_module)


def fit(cfg, *extra_callbacks: Callback, model: pl.LightningModule | None = None):
    """What train() does up to and including fit, keeping the model, trainer and datamodule for inspection."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    model = model if model is not None else instantiate(cfg.model)
    callbacks = build_callbacks(cfg.get("callbacks"), cfg.paths.output_dir, has_logger=False)
    trainer = build_trainer(cfg, [*callbacks, *extra_callbacks], [])
    trainer.fit(model, datamodule=datamodule, weights_only=True)
    return model, trainer, datamodule


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory) -> Path:
    """One tiny `strategy=dp` training run (fit + test) on CPU, shared by the checkpoint tests."""
    run_dir = tmp_path_factory.mktemp("dp") / "run"
    train(compose("train", run_dir, (*QUICK, "strategy=dp", "trainer.max_epochs=2")))
    return run_dir


def test_dp_trains_on_cpu_and_warns_once(make_cfg, caplog):
    """strategy=dp on CPU fits, tests, writes metrics.json and says once (not once per stage) it has no CUDA."""
    cfg = make_cfg("strategy=dp")
    with caplog.at_level(logging.WARNING, logger="hydralight.core.strategies.dp"):
        returned = train(cfg)
    metrics = read_metrics(Path(cfg.paths.output_dir))
    assert {"val/loss_best", "test/loss"} <= metrics.keys()
    assert returned == pytest.approx(metrics["val/loss_best"])
    warnings = [r for r in caplog.records if r.name == "hydralight.core.strategies.dp" and NO_CUDA_WARNING in r.message]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].levelno == logging.WARNING


def test_dp_checkpoints_have_plain_keys_and_load_weights_only(dp_run, make_cfg):
    """Every checkpoint of a dp run loads with weights_only=True and has exactly the plain model's keys."""
    checkpoints = sorted((dp_run / "checkpoints").glob("*.ckpt"))
    assert dp_run / "checkpoints" / "last.ckpt" in checkpoints and len(checkpoints) >= 2
    plain_keys = set(instantiate(make_cfg().model).state_dict())
    for path in checkpoints:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        keys = set(checkpoint["state_dict"])
        assert not [key for key in keys if "module." in key]
        assert keys == plain_keys


def test_dp_checkpoint_loads_into_the_default_strategy_model(dp_run):
    """NetRegression.load_from_checkpoint(weights_only=True) rebuilds the plain net with the dp run's weights."""
    path = dp_run / "checkpoints" / "last.ckpt"
    model = NetRegression.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert type(model.net) is TinyNet
    saved = torch.load(path, weights_only=True, map_location="cpu")["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_eval_reproduces_the_dp_runs_test_loss(dp_run, tmp_path):
    """eval on the dp run's best checkpoint (default strategy) reproduces the dp run's test metrics."""
    best = next(path for path in (dp_run / "checkpoints").glob("*.ckpt") if path.name != "last.ckpt")
    eval_dir = tmp_path / "eval"
    overrides = (f"ckpt_path={best}", "trainer.accelerator=cpu", "~callbacks.progress_bar", "logger=none")
    evaluate(compose("eval", eval_dir, overrides))
    trained, evaluated = read_metrics(dp_run), read_metrics(eval_dir)
    assert trained["test/loss"] > 0
    assert evaluated["test/loss"] == pytest.approx(trained["test/loss"], rel=1e-6)


@pytest.mark.filterwarnings("ignore:The dirpath has changed:UserWarning")  # a new run dir, as intended
@pytest.mark.parametrize(("first", "second"), [("dp", "auto"), ("auto", "dp")])
def test_resume_moves_between_dp_and_the_default_strategy(make_cfg, tmp_path, first, second):
    """A checkpoint written under one strategy resumes training under the other."""
    cfg = make_cfg(f"strategy={first}", "trainer.max_epochs=1", "test=false")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed_cfg = make_cfg(f"strategy={second}", "trainer.max_epochs=2", f"ckpt_path={last}", "test=false")
    resumed_cfg.paths.output_dir = str(tmp_path / "resumed")
    train(resumed_cfg)
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1
    assert resumed["global_step"] == 2 * torch.load(last, weights_only=True)["global_step"]
    assert not [key for key in resumed["state_dict"] if "module." in key]


def test_net_is_wrapped_during_each_stage_and_unwrapped_after(make_cfg):
    """During fit/validate/test/predict `net` is a torch.nn.DataParallel; after each stage it is the plain net."""
    probe = WrapProbe()
    model, trainer, datamodule = fit(make_cfg("strategy=dp"), probe)
    assert isinstance(trainer.strategy, DataParallelStrategy)
    assert type(model.net) is TinyNet  # unwrapped after fit
    trainer.test(model, datamodule=datamodule)
    assert type(model.net) is TinyNet
    trainer.predict(model, datamodule=datamodule)
    assert type(model.net) is TinyNet
    assert probe.net_types == {stage: {nn.DataParallel} for stage in ("train", "val", "test", "predict")}
    # While wrapped the module's own keys carry `net.module.`; what the strategy saves does not.
    assert any(key.startswith("net.module.") for key in probe.live_keys)
    assert probe.saved_keys and not [key for key in probe.saved_keys if "module." in key]
    # The optimizer still updates the very parameters of the (unwrapped) net.
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert {id(p) for p in model.net.parameters()} <= optimized


def test_dp_predictions_equal_the_unwrapped_net(make_cfg):
    """trainer.predict under strategy=dp gives exactly the plain net's outputs (CPU DataParallel is a pass-through)."""
    model, trainer, datamodule = fit(make_cfg("strategy=dp"))
    predictions = torch.cat([batch["prediction"] for batch in trainer.predict(model, datamodule=datamodule)])

    net = model.net.eval()
    assert type(net) is TinyNet
    with torch.no_grad():  # the same batches, so the same float operations
        expected = torch.cat([net(x).squeeze(-1) for x, _ in datamodule.predict_dataloader()])
    assert len(predictions) == len(datamodule.splits["test"])
    assert torch.equal(predictions, expected)

    plain = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    default = torch.cat([batch["prediction"] for batch in plain.predict(model, datamodule=datamodule)])
    assert torch.equal(predictions, default)


@pytest.mark.parametrize("module_name", ["nope", "hparams"])
def test_module_name_that_is_no_module_fails_naming_it(make_cfg, module_name):
    """strategy.module_name pointing at a missing or non-nn.Module attribute is a user error naming the key, the
    value and the attributes that would work."""
    cfg = make_cfg("strategy=dp", f"strategy.module_name={module_name}")
    with pytest.raises(UserError, match=rf"strategy\.module_name='{module_name}'") as error:
        train(cfg)
    assert f"NetRegression.{module_name}" in str(error.value)
    assert "Choose one of: net" in str(error.value)


class DeviceProbe(Callback):
    """Records the loss's device and the train loss metric's state devices at each training batch."""

    def __init__(self) -> None:
        self.loss_devices: set[torch.device] = set()
        self.metric_devices: set[torch.device] = set()
        self.device_ids: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.device_ids.append(list(pl_module.net.device_ids))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss_devices.add(outputs["loss"].device)
        mean = pl_module.losses["train_"]  # hydralight.testing.blocks.BlockRegression's
        self.metric_devices |= {mean.total.device, mean.weight.device}


@pytest.mark.gpu
def test_dp_on_two_gpus_scatters_each_batch(make_cfg):
    """strategy=dp on 2 GPUs: the net's forward runs on both devices, loss and metrics stay on cuda:0."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs at least 2 CUDA GPUs")
    cfg = make_cfg("model=blocks", "strategy=dp", "trainer.accelerator=gpu", "trainer.devices=2", "data.batch_size=32")
    model = instantiate(cfg.model)
    forward_devices: set[torch.device] = set()
    model.net.register_forward_hook(lambda module, args, output: forward_devices.add(args[0].device))
    probe = DeviceProbe()
    model, trainer, datamodule = fit(cfg, probe, model=model)
    root = torch.device("cuda", 0)
    assert forward_devices == {root, torch.device("cuda", 1)}
    assert probe.device_ids and all(ids == [0, 1] for ids in probe.device_ids)
    assert probe.loss_devices == {root}
    assert probe.metric_devices == {root}
    trainer.test(model, datamodule=datamodule)
    assert type(model.net) is BlockNet
    assert "test/loss" in read_metrics(Path(cfg.paths.output_dir))
