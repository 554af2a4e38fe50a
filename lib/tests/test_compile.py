"""`compile=true` on any task: the harness compiles the module's networks in place (hydralight.core.compiling), training
matches an uncompiled run, and the checkpoint is an uncompiled run's. (A bad value is test_cli_errors.py's.)"""

import logging
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MeanMetric

from hydralight.core.compiling import compile_networks, compiled_state
from hydralight.core.errors import UserError
from hydralight.core.strategies.dp import refuse_compiled_replicas
from hydralight.core.train import train
from hydralight.testing.numerics import assert_close_weights, load_last

# One epoch, fp32, with the model summary kept: Lightning's counts FLOPs by running the net under FlopCounterMode,
# which once left the net uncompiled for good (hydralight.compat.torch.compile_in_place).
SHORT = (
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "~callbacks.progress_bar",
    "trainer.enable_progress_bar=false",
    "precision=32-true",
    "seed=3",
    "test=false",
    "logger=none",
)


@pytest.mark.slow  # torch.compile imports torch._dynamo and compiles with inductor (a C++ compiler)
def test_compile_true_trains_compiled_to_the_weights_and_keys_of_an_uncompiled_run(make_cfg, tmp_path, caplog):
    """One epoch with compile=true, one without, from the same seed: the log line says the net is compiled, dynamo
    really compiled frames, and the checkpoints hold the same keys (no `_orig_mod.`) and the same weights to float
    rounding."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    caplog.set_level(logging.INFO, logger="hydralight")
    torch._dynamo.reset()  # an earlier compile in this process would be reused and count nothing
    counters.clear()
    try:
        compiled = make_cfg(*SHORT, "compile=true", quick=False)
        train(compiled)
        assert counters["frames"]["ok"] >= 1, dict(counters)
    finally:
        torch._dynamo.reset()
    assert any(message.endswith("NetRegression, compiled (net)") for message in caplog.messages), caplog.messages
    plain = make_cfg(*SHORT, quick=False)
    plain.paths.output_dir = str(tmp_path / "plain")
    train(plain)
    assert any(message.endswith("Model: hydralight.testing.NetRegression") for message in caplog.messages)

    got = load_last(compiled.paths.output_dir)["state_dict"]
    want = load_last(Path(plain.paths.output_dir))["state_dict"]
    assert list(got) == list(want)
    assert_close_weights(got, want, rtol=1e-5)


class TwoNetworks(LightningModule):
    """A GAN's shape: two networks, a metric, a container of metrics, a bare parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.generator = nn.Linear(2, 2)
        self.discriminator = nn.Sequential(nn.Linear(2, 1))
        self.loss_mean = MeanMetric()
        self.metrics = nn.ModuleDict({"val_": MeanMetric()})
        self.heads = nn.ModuleList([nn.Linear(2, 2)])  # a container: no forward of its own to compile
        self.scale = nn.Parameter(torch.ones(1))


def test_compile_networks_compiles_each_network_and_no_metric_or_container():
    """Every direct sub-module with parameters and a forward, in place (lazily: nothing is traced here)."""
    model = TwoNetworks()
    keys = list(model.state_dict())
    assert compile_networks(model) == ["generator", "discriminator"]
    assert compiled_state(model) == "compiled (generator, discriminator)"
    assert list(model.state_dict()) == keys


def test_compile_networks_says_when_there_is_nothing_to_compile(caplog):
    caplog.set_level(logging.WARNING, logger="hydralight")
    assert compile_networks(LightningModule()) == []
    assert "compile=true: LightningModule has no sub-module with parameters" in caplog.text


def test_dp_over_several_gpus_refuses_a_compiled_network():
    """DataParallel's per-step replicas of a network compiled in place would all call the original: refused in one
    line, while one device (no replicas) and an uncompiled network pass."""
    net = nn.Linear(2, 2)
    refuse_compiled_replicas(net, [0, 1])
    net.compile()
    refuse_compiled_replicas(net, [0])
    refuse_compiled_replicas(net, [])
    with pytest.raises(UserError, match=r"compile=true with strategy=dp over 2 GPUs.*strategy=ddp"):
        refuse_compiled_replicas(net, [0, 1])
