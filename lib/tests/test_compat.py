"""Each entry of hydralight.compat against the installed Lightning, Hydra, OmegaConf and torch: an upgrade that moves
a private attribute the library relies on fails here, the test named after the entry, not somewhere deep in a run."""

import copy
import functools
import importlib
import importlib.util
from pathlib import Path

import pytest
import torch
from hydra.core.utils import JobReturn
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf

from hydralight.compat import hydra as hydra_compat
from hydralight.compat import lightning as lightning_compat
from hydralight.compat import omegaconf as omegaconf_compat
from hydralight.compat import torch as torch_compat

QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


@pytest.mark.parametrize("module", [lightning_compat, hydra_compat, omegaconf_compat, torch_compat])
def test_every_name_a_compat_module_exports_exists(module):
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{module.__name__}: {missing}"


class Probe(Callback):
    """What the loop-state entries say at the first training batch's end and at the fit's end."""

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.setdefault("writes_logs", []).append(lightning_compat.writes_logs_this_step(trainer))
        if batch_idx == 0:
            self.seen["should_accumulate"] = lightning_compat.should_accumulate(trainer)
            self.seen["loader_states_to_load"] = lightning_compat.loader_states_to_load(trainer.fit_loop)
            self.seen["train_loader_built"] = lightning_compat.train_loader_built(trainer.fit_loop)

    def on_train_end(self, trainer, pl_module) -> None:
        self.seen["batches_that_stepped"] = lightning_compat.batches_that_stepped(trainer)


@pytest.fixture(scope="module")
def probed() -> dict[str, object]:
    """A fit of Lightning's BoringModel, 2 batches per optimizer step, 4 optimizer steps, logs every 2nd step."""
    probe = Probe()
    trainer = Trainer(max_steps=4, accumulate_grad_batches=2, log_every_n_steps=2, callbacks=[probe],
                      enable_checkpointing=False, limit_val_batches=0, **QUIET)  # fmt: skip
    trainer.fit(BoringModel())
    lightning_compat.forget_train_loader(trainer.fit_loop)
    probe.seen["train_loader_built_after_forget"] = lightning_compat.train_loader_built(trainer.fit_loop)
    return probe.seen


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("should_accumulate", True),  # the first of 2 accumulated batches
        ("loader_states_to_load", []),  # a fresh fit restores no loader position
        ("train_loader_built", True),
        ("train_loader_built_after_forget", False),
        ("batches_that_stepped", 4),
    ],
)
def test_lightning_loop_state(probed, entry, expected):
    assert probed[entry] == expected


def test_lightning_writes_logs_this_step(probed):
    """Of 8 batches (4 optimizer steps of 2 batches, a log every 2nd step), those of the log steps write logs."""
    writes = probed["writes_logs"]
    assert writes == [False, False, True, True] * 2  # both batches of every 2nd optimizer step


def test_lightning_ddp_kwargs():
    assert lightning_compat.ddp_kwargs(DDPStrategy(find_unused_parameters=True)) == {"find_unused_parameters": True}


def test_lightning_save_at_every_epoch_end(tmp_path):
    """A step-triggered ModelCheckpoint saves at each epoch's end too once told so."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", every_n_train_steps=1000, save_top_k=-1)
    lightning_compat.save_at_every_epoch_end(checkpoint)
    Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, callbacks=[checkpoint], **QUIET).fit(
        BoringModel()
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch=0.ckpt", "epoch=1.ckpt"]


def test_lightning_replace_clip_grad_by_norm():
    """gradient_clip_val goes through the replaced function, with the optimizer and the value."""
    calls = []

    class Replacing(Callback):
        def on_fit_start(self, trainer, pl_module) -> None:
            lightning_compat.replace_clip_grad_by_norm(
                trainer.precision_plugin, lambda optimizer, clip_val: calls.append(clip_val)
            )

    Trainer(max_steps=2, gradient_clip_val=0.5, callbacks=[Replacing()], enable_checkpointing=False,
            limit_val_batches=0, **QUIET).fit(BoringModel())  # fmt: skip
    assert calls == [0.5, 0.5]


def test_lightning_overridden_methods_exist():
    from lightning.pytorch.callbacks import ModelSummary
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    assert callable(getattr(ModelSummary, lightning_compat.MODEL_SUMMARY_HOOK))
    assert callable(getattr(ExperimentWriter, lightning_compat.CSV_RECORD_NEW_KEYS))


def test_lightning_ddp_launch_is_replaced_and_restored():
    module = importlib.import_module(lightning_compat.DDP_LAUNCHER_MODULE)
    before = {name: getattr(module, name) for name in lightning_compat.DDP_LAUNCH_FUNCTIONS}
    originals = lightning_compat.replace_ddp_launch(print, repr)
    assert originals == before
    assert [getattr(module, name) for name in lightning_compat.DDP_LAUNCH_FUNCTIONS] == [print, repr]
    lightning_compat.restore_ddp_launch(originals)
    assert {name: getattr(module, name) for name in lightning_compat.DDP_LAUNCH_FUNCTIONS} == before


def test_lightning_tensorboard_writer_kwargs(tmp_path):
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path)
    lightning_compat.tensorboard_writer_kwargs(logger)["filename_suffix"] = ".probe"
    logger.experiment.flush()  # the SummaryWriter it creates now, with those kwargs
    assert [path.suffix for path in Path(logger.log_dir).iterdir()] == [".probe"]


def test_lightning_mlflow_run_id(tmp_path):
    pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = MLFlowLogger(tracking_uri=uri)
    assert lightning_compat.mlflow_run_id(first) is None  # no run made yet
    run_id = first.run_id
    assert lightning_compat.mlflow_tracking_uri(first) == uri
    assert lightning_compat.mlflow_client(first).get_run(run_id).info.run_id == run_id
    again = MLFlowLogger(tracking_uri=uri)
    lightning_compat.set_mlflow_run_id(again, run_id)
    assert again.run_id == run_id


def test_lightning_wandb_run_id(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(save_dir=tmp_path, offline=True)
    assert lightning_compat.wandb_run_id(logger) is None
    lightning_compat.set_wandb_run_id(logger, "abc123")
    assert lightning_compat.wandb_run_id(logger) == "abc123"
    assert logger.version == "abc123"


def test_lightning_fabric_functions():
    model = torch.nn.Linear(2, 2)
    lightning_compat.materialize_distributed_module(model, torch.device("cpu"))  # nothing to materialize: no error
    optimizer = torch.optim.Adam(model.parameters())
    lightning_compat.optimizers_to_device([optimizer], torch.device("cpu"))
    assert lightning_compat.flatten_dict(lightning_compat.convert_params({"a": {"b": 1}})) == {"a/b": 1}
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    rekeyed = lightning_compat.rekey_optimizer_state_if_needed(optimizer.state_dict(), model)
    assert sorted(rekeyed["state"]) == ["bias", "weight"]  # keyed by parameter name, as a sharded load needs


def test_hydra_locate_and_parser():
    assert hydra_compat.locate("pathlib.Path") is Path
    assert hydra_compat.get_args_parser().parse_args(["a=1"]).overrides == ["a=1"]
    assert hydra_compat.locate(hydra_compat.BASIC_SWEEPER).__name__ == "BasicSweeper"


def test_hydra_job_return_value():
    job_return = JobReturn()
    job_return.return_value = ValueError("the job's error")
    assert isinstance(hydra_compat.job_return_value(job_return), ValueError)


def test_omegaconf_full_key():
    cfg = OmegaConf.create({"model": {"net": {"width": 8}}})
    assert omegaconf_compat.full_key(cfg.model.net) == "model.net"


def test_torch_foreach_norm_and_checkpoint():
    tensors = [torch.tensor([3.0, 4.0]), torch.tensor([6.0, 8.0])]
    assert [float(norm) for norm in torch_compat.foreach_norm(tensors, 2.0)] == [5.0, 10.0]
    block = torch.nn.Linear(2, 2)
    torch_compat.composable_checkpoint(block)
    assert list(dict(block.named_parameters())) == ["weight", "bias"]  # names kept


def test_torch_compile_in_place_traces_torchs_own_modules(monkeypatch):
    """An nn.Sequential, which nn.Module.compile leaves untraced (torch #150915), compiles in place, even after a first
    call under FlopCounterMode (torch #190286): dynamo traces a frame, the names and the outputs are the module's
    own, and a copy is uncompiled."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from torch.utils.flop_counter import FlopCounterMode

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # tracing only
    torch._dynamo.reset()
    counters.clear()
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())
    names = list(net.state_dict())
    assert not torch_compat.compiled_in_place(net)
    torch_compat.compile_in_place(net)
    assert torch_compat.compiled_in_place(net) and list(net.state_dict()) == names
    plain = copy.deepcopy(net)
    assert not torch_compat.compiled_in_place(plain)
    x = torch.randn(3, 2)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as flops:  # what Lightning's model summary does
            net(x)
        assert flops.get_total_flops() > 0 and not counters["frames"]["ok"]
        assert torch.equal(net(x), plain(x))
        assert counters["frames"]["ok"] >= 1, dict(counters)
    finally:
        torch._dynamo.reset()
    linear = torch.nn.Linear(2, 2)
    linear.compile()  # nn.Module.compile: seen as compiled too
    assert torch_compat.compiled_in_place(linear)


def test_torch_onnx_registration_logger_names_a_module():
    pytest.importorskip("onnxscript")
    assert importlib.util.find_spec(torch_compat.ONNX_REGISTRATION_LOGGER) is not None
