"""What is recorded is what ran: the log's lines and the run's `.hydra/config.yaml` state the precision Lightning
really uses, the learning rate and batch size the finders chose, compile, accumulation and clipping."""

import json
import logging
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hydralight.core.build import build_trainer
from hydralight.core.compiling import compiled_state
from hydralight.core.train import train

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="16-mixed stays 16-mixed on a CUDA machine")


def save_like_hydra(cfg: DictConfig) -> Path:
    """The run's `.hydra/config.yaml` as Hydra writes it before the task starts (unresolved)."""
    path = Path(cfg.paths.output_dir) / ".hydra" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(OmegaConf.to_yaml(cfg))
    return path


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """The lines that differ between two saves of one config (a rewrite keeps every other line)."""
    old, new = before.splitlines(), after.splitlines()
    assert len(old) == len(new), "the rewrite added or dropped lines"
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def trainer_line(caplog: pytest.LogCaptureFixture) -> str:
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Trainer: ")]
    return line


@no_cuda
def test_16_mixed_on_cpu_is_recorded_as_the_bf16_mixed_that_runs(make_cfg, caplog):
    """precision=16-mixed on a CPU: the Trainer line, the saved config and the config the loggers get all say
    bf16-mixed; trainer.precision keeps its `${precision}`, every other line of the saved config is kept."""
    cfg = make_cfg("precision=16-mixed")
    path = save_like_hydra(cfg)
    before = path.read_text()
    with caplog.at_level(logging.INFO, logger="hydralight.core.console"):
        trainer = build_trainer(cfg, callbacks=[], loggers=[])
    assert trainer.precision == "bf16-mixed"
    assert "precision=bf16-mixed" in trainer_line(caplog)
    assert changed_lines(before, path.read_text()) == [("precision: 16-mixed", "precision: bf16-mixed")]
    assert OmegaConf.load(path).trainer._get_node("precision")._value() == "${precision}"
    assert cfg.trainer.precision == "bf16-mixed"  # what log_hyperparameters sends to the loggers


def test_a_run_that_ran_as_configured_leaves_the_saved_config_byte_for_byte(make_cfg):
    """Nothing to correct, nothing rewritten: the saved config is Hydra's own file, untouched."""
    cfg = make_cfg("accumulate_grad_batches=2", "gradient_clip_val=0.5")
    path = save_like_hydra(cfg)
    before = path.read_bytes()
    build_trainer(cfg, callbacks=[], loggers=[])
    assert path.read_bytes() == before


def test_the_trainer_line_states_strategy_devices_accumulation_and_clipping(make_cfg, caplog):
    """One line says what the Trainer runs with, in the switches' own words."""
    cfg = make_cfg("accumulate_grad_batches=3", "gradient_clip_val=0.5", "gradient_clip_algorithm=value")
    with caplog.at_level(logging.INFO, logger="hydralight.core.console"):
        build_trainer(cfg, callbacks=[], loggers=[])
    line = trainer_line(caplog)
    assert "strategy=SingleDeviceStrategy (1 x cpu)" in line
    assert "accumulate_grad_batches=3" in line
    assert "gradient_clip_val=0.5 (value)" in line
    with caplog.at_level(logging.INFO, logger="hydralight.core.console"):
        caplog.clear()
        build_trainer(make_cfg(), callbacks=[], loggers=[])
    assert "gradient_clip_val=null" in trainer_line(caplog)


@pytest.mark.slow  # torch.compile imports torch._dynamo
def test_the_model_line_says_whether_the_net_is_compiled(make_cfg):
    """A module that compiles its net (torch.compile, in place, as compile=true does): the log
    line says so, and which part."""
    model = instantiate(make_cfg().model)
    assert compiled_state(model) == "not compiled"
    model.net.compile()
    assert compiled_state(model) == "compiled (net)"
    assert compiled_state(torch.compile(torch.nn.Linear(2, 2))) == "compiled (the whole model)"


@pytest.mark.slow  # a finder's trials, then training
@pytest.mark.parametrize(
    ("model", "key", "configured"),
    [("configured_regression", "model.optimizer.lr", 0.001), ("regression", "model.lr", 0.05)],
    ids=["optimizer-config", "lr-argument"],
)
def test_lr_find_records_the_learning_rate_it_chose_in_the_saved_config(make_cfg, model, key, configured):
    """tune=lr_find: the saved config's learning rate (the optimizer config's, else the module's `lr` argument) is
    the suggestion training used, nothing else changes."""
    cfg = make_cfg(f"model={model}", "tune=lr_find", "callbacks.lr_find.num_training_steps=20", "test=false")
    path = save_like_hydra(cfg)
    before = path.read_text()
    train(cfg)
    suggestion = json.loads((Path(cfg.paths.output_dir) / "lr_find.json").read_text())["suggestion"]
    assert suggestion != pytest.approx(configured)
    assert OmegaConf.select(OmegaConf.load(path), key) == pytest.approx(suggestion)
    ((old, new),) = changed_lines(before, path.read_text())
    assert old.strip() == f"lr: {configured}" and new.strip().startswith("lr: ")
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert all(isinstance(value, float) for value in metrics.values())  # metrics.json stays floats only


@pytest.mark.slow  # a finder's trials, then training
def test_batch_size_finder_records_the_batch_size_it_chose_in_the_saved_config(make_cfg):
    """tune=batch_size: data.batch_size in the saved config is what training used; the finder's own
    `init_val: ${data.batch_size}` keeps the size it started from."""
    cfg = make_cfg(
        "tune=batch_size",
        "data.n_samples=768",  # a training split larger than the sizes tried
        "callbacks.batch_size_finder.steps_per_trial=1",
        "callbacks.batch_size_finder.max_trials=2",
        "test=false",
    )
    path = save_like_hydra(cfg)
    train(cfg)
    saved = OmegaConf.load(path)
    assert saved.data.batch_size > 16
    assert saved.callbacks.batch_size_finder.init_val == 16
