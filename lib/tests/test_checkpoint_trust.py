"""A checkpoint is data: no entry point runs code named inside a checkpoint file.

Each payload below, put in a checkpoint's hyperparameters or its task record, would write a file if it were built
(Hydra's instantiate blocks only os.system and subprocess). eval, predict and export refuse the file in one line
(UserError) before anything is imported or built; train's ckpt_path and init_from never read hyperparameters at all.
Either way the marker file never appears. The task is hydralight.testing's regression, not an example's.
"""

import json
from pathlib import Path

import lightning
import pytest
import torch
from omegaconf import OmegaConf

from hydralight.core.errors import UserError
from hydralight.core.evaluate import evaluate
from hydralight.core.export import export
from hydralight.core.predict import predict
from hydralight.core.runs.checkpoints import TASK_KEY
from hydralight.core.train import train
from hydralight.testing import NetRegression, compose

MODULE = "hydralight.testing.tasks.NetRegression"
DATA = {"_target_": "hydralight.testing.tasks.RegressionData"}


def payloads(marker: Path, source: Path) -> dict[str, dict]:
    """The four ways a file gets written that Hydra's blocklist lets through, and a resolver that makes a dir."""
    path = {"_target_": "pathlib.Path", "_args_": [str(marker)]}
    return {
        "write_text": {"_target_": "pathlib.Path.write_text", "self": path, "data": "import os"},
        "touch": {"_target_": "pathlib.Path.touch", "self": path},
        "open": {"_target_": "builtins.open", "file": str(marker), "mode": "w"},
        "copyfile": {"_target_": "shutil.copyfile", "src": str(source), "dst": str(marker)},
        "resolver": {"_target_": "hydralight.testing.tasks.TinyNet", "in_features": f"${{run_dir:{marker}}}"},
    }


PAYLOADS = ("write_text", "touch", "open", "copyfile", "resolver")


def save_checkpoint(path: Path, hparams: dict | None = None, task: dict | None = None) -> Path:
    """A checkpoint of hydralight.testing's NetRegression, as train.py writes one (weights, hyperparameters, task
    record), with `hparams` and `task` laid over."""
    model = NetRegression()
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": {**model.hparams, **(hparams or {})},
            "pytorch-lightning_version": lightning.__version__,
            TASK_KEY: {"module": MODULE, "data": DATA, **(task or {})},
        },
        path,
    )
    return path


def run_entry_point(name: str, ckpt: Path, out: Path) -> dict:
    quick = ("trainer.accelerator=cpu",) if name == "eval" else ()
    cfg = compose(name, out / name, (*quick, f"ckpt_path={ckpt}"))
    return {"eval": lambda: evaluate(cfg, overrides=[]), "predict": lambda: predict(cfg, overrides=[]),
            "export": lambda: export(cfg)}[name]()  # fmt: skip


EXPORTED = {"path", "format", "ckpt_path", "max_abs_diff"}


@pytest.mark.parametrize(
    ("entry_point", "keys"), [("eval", {"test/loss"}), ("predict", {"count"}), ("export", EXPORTED)]
)
def test_an_untampered_checkpoint_of_a_configured_net_loads_everywhere(tmp_path, entry_point, keys):
    """The control: the same module, its net from a config of the project's own package, loads and runs."""
    assert set(run_entry_point(entry_point, save_checkpoint(tmp_path / "good.ckpt"), tmp_path)) == keys


def test_the_run_config_beside_a_checkpoint_keeps_hydras_interpolations(tmp_path):
    """Hydra writes `.hydra/config.yaml` unresolved (`data_dir: ${paths.data_dir}`): eval of a checkpoint in its run
    dir resolves them against its own config, as before; only the names in it are checked."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    ckpt = save_checkpoint(run / "checkpoints" / "best.ckpt")
    data = {**DATA, "seed": "${seed}", "batch_size": "${oc.select:data_batch,8}"}
    OmegaConf.save(OmegaConf.create({"task_name": "train", "data": data}), run / ".hydra" / "config.yaml")
    cfg = compose("eval", tmp_path / "eval", ("trainer.accelerator=cpu", f"ckpt_path={ckpt}"))
    assert set(evaluate(cfg, overrides=[])) == {"test/loss"}
    assert (cfg.data.seed, cfg.data.batch_size) == (cfg.seed, 8)  # resolved here


@pytest.mark.parametrize("entry_point", ["eval", "predict", "export"])
@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_payload_in_the_hyperparameters_is_refused_and_never_runs(tmp_path, entry_point, payload):
    marker = tmp_path / "marker"
    ckpt = save_checkpoint(tmp_path / "evil.ckpt", hparams={"net": payloads(marker, tmp_path / "evil.ckpt")[payload]})
    with pytest.raises(UserError) as error:
        run_entry_point(entry_point, ckpt, tmp_path)
    assert str(ckpt) in str(error.value)
    assert "\n" not in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("entry_point", ["eval", "predict", "export"])
@pytest.mark.parametrize(
    "record",
    [
        pytest.param({"module": "pathlib.Path.touch"}, id="module-function"),
        pytest.param({"module": "antigravity.Anything"}, id="module-unknown-package"),
        pytest.param({"data": {"_target_": "pathlib.Path.touch", "self": "MARKER"}}, id="data-function"),
        pytest.param(
            {"data": {**DATA, "extra": {"_target_": "builtins.open", "file": "MARKER", "mode": "w"}}}, id="data-nested"
        ),
    ],
)
def test_a_task_record_naming_other_code_is_refused_before_it_is_imported(tmp_path, entry_point, record):
    marker = tmp_path / "marker"
    record = json.loads(json.dumps(record).replace("MARKER", str(marker)))
    ckpt = save_checkpoint(tmp_path / "evil.ckpt", task=record)
    with pytest.raises(UserError, match=r"which this project does not build"):
        run_entry_point(entry_point, ckpt, tmp_path)
    assert not marker.exists()
    assert "antigravity" not in __import__("sys").modules


def test_lightnings_own_instantiator_key_is_refused(tmp_path):
    ckpt = save_checkpoint(tmp_path / "evil.ckpt", hparams={"_instantiator": "pathlib.Path.touch"})
    with pytest.raises(UserError, match=r"'pathlib.Path.touch' \(hyper_parameters._instantiator\)"):
        run_entry_point("eval", ckpt, tmp_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A short run of the testing project's regression, its last checkpoint."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train(compose("train", out, ("trainer.accelerator=cpu", "trainer.max_epochs=1", "test=false")))
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("key", ["ckpt_path", "init_from"])
@pytest.mark.parametrize("payload", PAYLOADS)
def test_train_from_a_checkpoint_never_builds_its_hyperparameters(trained, tmp_path, key, payload):
    """train.py builds the model from the user's config: a checkpoint gives it weights and training state only."""
    marker = tmp_path / "marker"
    saved = torch.load(trained, weights_only=True)
    saved["hyper_parameters"]["net"] = payloads(marker, trained)[payload]
    torch.save(saved, tmp_path / "evil.ckpt")
    overrides = ("trainer.accelerator=cpu", "trainer.max_epochs=2", "test=false", f"{key}={tmp_path / 'evil.ckpt'}")
    train(compose("train", tmp_path / "run", overrides))
    assert not marker.exists()
