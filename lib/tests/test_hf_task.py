"""A Hugging Face `transformers` model as its users write it runs through every switch (the hf extra): a tiny random
BERT built from its config (HF_HUB_OFFLINE=1: nothing downloaded) with dict batches, its own per-step warm-up
schedule and metrics named with underscores (hydralight.testing.hf: model=tiny_bert data=markers, monitor=val_acc
mode=max). It trains well above chance, eval.py reproduces its test metrics, DDP over 2 processes trains, FSDP over 2
shards each encoder layer and equals DDP, a `-m` sweep is ranked by val_acc with test_acc shown, and export.py keeps
both inputs. Skipped without transformers."""

import json
import os
import re
import socket
from pathlib import Path

import pytest
import torch

from hydralight.testing import QUICK, assert_ok, compose, run_cli, write_project
from hydralight.testing.numerics import assert_close_weights, load_last, read_metrics

os.environ["HF_HUB_OFFLINE"] = "1"  # any download fails, in every CLI run below (they start after collection)
pytest.importorskip("transformers", reason="the hf extra: pip install -e 'lib[hf]'")

from hydralight.testing.hf import MARKER, MarkerData, TinyTextClassifier

OFFLINE = {"HF_HUB_OFFLINE": "1"}
TASK = ("model=tiny_bert", "data=markers", "monitor=val_acc", "mode=max", "logger=none")
EPOCHS = 3
STEPS_PER_EPOCH = 512 // 32  # data.n_train // data.batch_size, in one process
# The DDP and FSDP runs: 2 processes of 8 steps an epoch each, in fp32, untested (they are compared, not scored).
PAIR = (*QUICK, *TASK, f"trainer.max_epochs={EPOCHS}", "precision=32-true", "trainer.devices=2", "test=false")


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of the best val_acc (save_top_k=1), the one train.py tested."""
    (best,) = (path for path in (run_dir / "checkpoints").glob("*.ckpt") if path.name != "last.ckpt")
    return best


def refuse_connections(*args: object) -> None:
    raise AssertionError("a network connection was attempted: the tiny BERT must be built without a download")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three epochs of the tiny BERT in-process, tested on its best checkpoint, with every socket connection refused
    (in-process, transformers may have been imported before HF_HUB_OFFLINE was set); its run dir."""
    from hydralight.core.train import train

    run_dir = tmp_path_factory.mktemp("hf") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse_connections)
        train(compose("train", run_dir, (*QUICK, *TASK, f"trainer.max_epochs={EPOCHS}")))
    return run_dir


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_project(tmp_path_factory.mktemp("hf-project"))


def test_trains_well_above_chance_on_dict_batches_with_its_own_scheduler(trained):
    """test_acc and val_acc_best near 1 (chance: 1/2); the checkpoint loads with weights_only=True, its scheduler
    stepped once per optimizer step, and the module needs the attention mask to score (the padding is the marker)."""
    metrics = read_metrics(trained)
    assert metrics["test_acc"] >= 0.9 and metrics["val_acc_best"] >= 0.9, metrics
    assert {"train_loss", "val_loss", "test_loss"} <= metrics.keys()
    last = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert last["lr_schedulers"][0]["last_epoch"] == last["global_step"]  # "interval": "step"
    assert last["hyper_parameters"]["config"]["num_hidden_layers"] == 2  # BertConfig's arguments, a plain dict

    model = TinyTextClassifier.load_from_checkpoint(best_checkpoint(trained), weights_only=True).eval()
    batch = MarkerData().splits["test"][:]
    with torch.no_grad():
        masked = model(batch["input_ids"], batch["attention_mask"]).argmax(-1)
        unmasked = model(batch["input_ids"], torch.ones_like(batch["attention_mask"])).argmax(-1)
    assert (masked == batch["labels"]).float().mean() == pytest.approx(metrics["test_acc"])
    assert (unmasked == batch["labels"]).float().mean() < 0.75  # it reads the mask: without it, near chance
    assert (batch["input_ids"][batch["attention_mask"] == 0] == MARKER).all()


def test_eval_reproduces_the_test_metrics_of_the_train_run(trained, project, tmp_path):
    """`python eval.py ckpt_path=<best>` rebuilds the module and its data from the checkpoint and gets the test_acc
    and test_loss the train run recorded, without a traceback."""
    run_dir = tmp_path / "eval"
    result = run_cli("eval.py", f"ckpt_path={best_checkpoint(trained)}", *QUICK[2:], "logger=none",
                     f"hydra.run.dir={run_dir}", cwd=project, env=OFFLINE)  # fmt: skip
    assert_ok(result)
    assert "Traceback" not in result.stdout + result.stderr
    evaluated, recorded = read_metrics(run_dir), read_metrics(trained)
    assert evaluated["test_acc"] == pytest.approx(recorded["test_acc"], abs=1e-7)
    assert evaluated["test_loss"] == pytest.approx(recorded["test_loss"], rel=1e-6)


@pytest.mark.parametrize(
    "switches",
    [("strategy=dp",), ("precision=16-mixed",), ("accumulate_grad_batches=2", "gradient_clip_val=0.5")],
    ids=["dp", "16-mixed", "accumulate-clip"],
)
def test_the_one_process_switches_train_it(switches, tmp_path):
    """DataParallel, mixed precision (bf16 on CPU), accumulation with clipping: each trains it as it is."""
    from hydralight.core.train import train

    run_dir = tmp_path / "run"
    train(compose("train", run_dir, (*QUICK, *TASK, f"trainer.max_epochs={EPOCHS}", *switches)))
    assert read_metrics(run_dir)["val_acc_best"] >= 0.9


@pytest.fixture(scope="module")
def ddp_run(project, tmp_path_factory) -> Path:
    """strategy=ddp over 2 CPU processes; its run dir."""
    run_dir = tmp_path_factory.mktemp("hf-ddp") / "run"
    assert_ok(run_cli("train.py", *PAIR, "strategy=ddp", f"hydra.run.dir={run_dir}", cwd=project, env=OFFLINE))
    return run_dir


@pytest.mark.slow
def test_ddp_over_two_processes_trains(ddp_run):
    """Each process takes half the samples an epoch; the run learns the task."""
    assert load_last(ddp_run)["global_step"] == EPOCHS * STEPS_PER_EPOCH // 2
    assert read_metrics(ddp_run)["val_acc_best"] >= 0.9


@pytest.mark.slow
def test_fsdp_over_two_processes_shards_each_encoder_layer_and_equals_ddp(ddp_run, project, tmp_path):
    """strategy=fsdp needs nothing of the module: each BertLayer (an element of the encoder's nn.ModuleList) is an
    FSDP unit of its own, its parameters DTensors split in half on dim 0 in both processes, and BERT as the root. The
    run equals DDP's (same steps, same data order) to float tolerance, in one consolidated checkpoint."""
    run_dir, record = tmp_path / "fsdp", tmp_path / "sharding"
    assert_ok(run_cli("train.py", *PAIR, "strategy=fsdp", f"hydra.run.dir={run_dir}",
                      "+callbacks.sharding._target_=hydralight.testing.hf.ShardingRecord",
                      f"+callbacks.sharding.folder={record}", cwd=project, env=OFFLINE))  # fmt: skip
    for rank in (0, 1):
        units = json.loads((record / f"rank{rank}.json").read_text())
        assert sorted(units) == ["model", "model.bert.encoder.layer.0", "model.bert.encoder.layer.1"], units
        for path, unit in units.items():
            assert unit["sharded"] and unit["local"] * 2 == unit["full"], (rank, path, unit)
        assert {units[f"model.bert.encoder.layer.{i}"]["class"] for i in (0, 1)} == {"BertLayer"}

    fsdp, ddp = load_last(run_dir), load_last(ddp_run)
    assert fsdp["global_step"] == ddp["global_step"] == EPOCHS * STEPS_PER_EPOCH // 2
    assert fsdp["state_dict"].keys() == ddp["state_dict"].keys()
    assert_close_weights(fsdp["state_dict"], ddp["state_dict"], rtol=1e-6)
    assert read_metrics(run_dir)["train_loss"] == pytest.approx(read_metrics(ddp_run)["train_loss"], rel=1e-6)


@pytest.mark.slow
@pytest.mark.sweeps
def test_a_sweep_is_ranked_by_val_acc_and_shows_test_acc(project, tmp_path):
    """`train.py -m model.lr=0.00001,0.003`: the printed table puts the learning rate that learns first, by
    val_acc_best (maximized), with test_acc beside it; no traceback."""
    sweep_dir = tmp_path / "sweep"
    result = run_cli("train.py", "-m", *QUICK, *TASK, f"trainer.max_epochs={EPOCHS}", "model.lr=0.00001,0.003",
                     f"hydra.sweep.dir={sweep_dir}", f"paths.log_dir={tmp_path / 'outputs'}", cwd=project,
                     env=OFFLINE, timeout=300)  # fmt: skip
    assert_ok(result)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    title = next(i for i, line in enumerate(lines) if "Sweep summary" in line)
    assert lines[title].endswith("best first by val_acc_best (maximize)"), lines[title]
    header, first, second = (lines[title + i].split() for i in (1, 2, 3))
    assert header[:3] == ["job", "status", "model.lr"] and {"val_acc_best", "test_acc"} <= set(header), header
    best, worst = (dict(zip(header, row, strict=True)) for row in (first, second))
    assert (best["model.lr"], worst["model.lr"]) == ("0.003", "1e-05")
    assert float(best["val_acc_best"]) > float(worst["val_acc_best"])
    assert float(best["test_acc"]) >= 0.9
    assert re.search(r"2 jobs, 2 ok, 0 failed", result.stdout)


def test_export_to_onnx_keeps_both_inputs(trained, project, tmp_path):
    """`python export.py ckpt_path=<best> format=onnx`: the file takes input_ids and attention_mask, by those names,
    and follows the mask as the checkpoint does."""
    for package in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(package)
    import onnxruntime

    run_dir = tmp_path / "export"
    result = run_cli("export.py", f"ckpt_path={best_checkpoint(trained)}", "format=onnx", f"hydra.run.dir={run_dir}",
                     cwd=project, env=OFFLINE)  # fmt: skip
    assert_ok(result)
    assert "Traceback" not in result.stdout + result.stderr
    session = onnxruntime.InferenceSession(str(run_dir / "model.onnx"))
    assert [node.name for node in session.get_inputs()] == ["input_ids", "attention_mask"]

    model = TinyTextClassifier.load_from_checkpoint(best_checkpoint(trained), weights_only=True).eval()
    batch = MarkerData().splits["test"][:5]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    unmasked = {**inputs, "attention_mask": torch.ones_like(batch["attention_mask"])}
    outputs = []
    for feed in (inputs, unmasked):
        (logits,) = session.run(None, {name: tensor.numpy() for name, tensor in feed.items()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(logits), model(**feed), atol=1e-4, rtol=1e-4)
        outputs.append(logits)
    assert not torch.allclose(torch.from_numpy(outputs[0]), torch.from_numpy(outputs[1]))
