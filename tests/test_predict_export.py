"""predict.py writes one prediction per input; export.py writes TorchScript / ExportedProgram / ONNX files whose
outputs match the checkpoint's within 1e-5."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hydralight.data.digits import load_digits
from hydralight.errors import UserError
from hydralight.export import FORMATS, run_exported
from hydralight.export import export as export_task
from hydralight.models import Classifier
from hydralight.predict import predict
from hydralight.train import train
from tests.conftest import TINY, assert_ok, compose_config, run_cli

TOLERANCE = 1e-5
TEST_SPLIT_SIZE = 359  # data=digits: 20% of 1,797


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The best checkpoint of one tiny training run, shared by this module's tests."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train(compose_config("train", run_dir, (*TINY, "test=false")))
    return next(path for path in (run_dir / "checkpoints").glob("*.ckpt") if path.name != "last.ckpt")


@pytest.fixture(scope="module")
def model(checkpoint) -> Classifier:
    return Classifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Twenty real digits as the model sees them: (20, 1, 8, 8) in [0, 1]."""
    return load_digits()[0][:20]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def predicted(rows: list[dict[str, str]]) -> list[int]:
    return [int(row["prediction"]) for row in rows]


def test_predict_defaults_to_the_test_split_one_row_per_sample(make_cfg, model, checkpoint):
    """With no input, predict writes one row per test-split image, with its label, and the model's argmax."""
    cfg = make_cfg(f"ckpt_path={checkpoint}", config_name="predict", tiny=False)
    result = predict(cfg)
    rows = read_rows(Path(cfg.output))
    assert len(rows) == result["count"] == TEST_SPLIT_SIZE
    assert list(rows[0])[:4] == ["index", "prediction", "confidence", "label"]
    assert [int(row["index"]) for row in rows] == list(range(TEST_SPLIT_SIZE))
    labels = np.array([int(row["label"]) for row in rows])
    assert result["accuracy"] == pytest.approx(float((np.array(predicted(rows)) == labels).mean()))
    probabilities = np.array([[float(row[f"prob_{k}"]) for k in range(10)] for row in rows])
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(TEST_SPLIT_SIZE), abs=1e-5)


def test_predict_reads_pt_npy_and_csv_inputs_alike(make_cfg, model, checkpoint, images, tmp_path):
    """The same images as a .pt (N,1,8,8), an .npy (N,64) and a .csv with a header give the same predictions,
    one per input, equal to the checkpoint's own argmax."""
    torch.save(images, tmp_path / "images.pt")
    np.save(tmp_path / "images.npy", images.reshape(len(images), -1).numpy())
    np.savetxt(tmp_path / "images.csv", images.reshape(len(images), -1).numpy(), delimiter=",",
               header=",".join(f"pixel{i}" for i in range(64)), comments="")  # fmt: skip
    with torch.no_grad():
        expected = model(images).argmax(dim=-1).tolist()
    for name in ("images.pt", "images.npy", "images.csv"):
        output = tmp_path / f"{name}.predictions.csv"
        cfg = make_cfg(f"ckpt_path={checkpoint}", f"input={tmp_path / name}", f"output={output}",
                       config_name="predict", tiny=False)  # fmt: skip
        assert predict(cfg) == {"count": len(images)}  # no labels in a file of inputs, so no accuracy
        rows = read_rows(output)
        assert "label" not in rows[0]
        assert predicted(rows) == expected, name


def test_predict_scale_turns_raw_pixels_into_model_inputs(make_cfg, model, checkpoint, images, tmp_path):
    """scale=0.0625 lets raw UCI rows (pixels 0..16) give the same predictions as the scaled images."""
    np.savetxt(tmp_path / "raw.csv", (images.reshape(len(images), -1) * 16).numpy(), delimiter=",")
    cfg = make_cfg(f"ckpt_path={checkpoint}", f"input={tmp_path / 'raw.csv'}", "scale=0.0625",
                   config_name="predict", tiny=False)  # fmt: skip
    predict(cfg)
    with torch.no_grad():
        assert predicted(read_rows(Path(cfg.output))) == model(images).argmax(dim=-1).tolist()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("wrong_shape.npy", np.zeros((3, 10), dtype=np.float32), r"shape \(3, 10\).*\(N, 1, 8, 8\) or \(N, 64\)"),
        ("not_numbers.csv", "a,b\nc,d\n", "not a CSV of numbers"),
        ("a_dict.pt", {"x": torch.zeros(2, 64)}, "holds a dict"),
        ("garbage.pt", b"not a torch file", "could not be read"),
        ("images.txt", "1,2,3", r"unknown file type.*\.pt, \.npy, \.csv"),
    ],
)
def test_predict_bad_input_is_a_user_error_naming_it(make_cfg, checkpoint, tmp_path, name, content, message):
    """An unreadable, foreign or wrongly shaped input file is a UserError that names input= and what is expected."""
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, dict):
        torch.save(content, path)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    cfg = make_cfg(f"ckpt_path={checkpoint}", f"input={path}", config_name="predict", tiny=False)
    with pytest.raises(UserError, match=r"input=.*" + message):
        predict(cfg)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_round_trip_matches_the_checkpoint(make_cfg, model, checkpoint, images, fmt):
    """Each export format, loaded back, gives the checkpoint's outputs within 1e-5 on real digits and on a batch
    size other than the one it was exported with."""
    if fmt == "onnx":
        for package in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(package)
    cfg = make_cfg(f"ckpt_path={checkpoint}", f"format={fmt}", config_name="export", tiny=False)
    result = export_task(cfg)
    path = Path(result["path"])
    assert path.is_file() and path.parent == Path(cfg.paths.output_dir)
    assert result["max_abs_diff"] <= TOLERANCE
    assert json.loads((Path(cfg.paths.output_dir) / "export.json").read_text()) == result
    for batch in (images, images[:1]):
        with torch.no_grad():
            expected = model(batch)
        assert (run_exported(path, fmt, batch) - expected).abs().max().item() <= TOLERANCE


def test_export_needs_no_project_code_to_load(make_cfg, model, checkpoint, images, tmp_path):
    """The TorchScript file loads in a fresh python that never imports hydralight, and predicts the same classes."""
    cfg = make_cfg(f"ckpt_path={checkpoint}", f"output={tmp_path / 'model.pt'}", config_name="export", tiny=False)
    export_task(cfg)
    torch.save(images, tmp_path / "images.pt")
    script = (
        "import sys, torch; model = torch.jit.load(sys.argv[1]); x = torch.load(sys.argv[2], weights_only=True);"
        "print(model(x).argmax(-1).tolist()); assert not any(m.startswith('hydralight') for m in sys.modules)"
    )
    result = run_cli("-c", script, str(tmp_path / "model.pt"), str(tmp_path / "images.pt"))
    assert_ok(result)
    with torch.no_grad():
        assert result.stdout.strip() == str(model(images).argmax(dim=-1).tolist())


@pytest.mark.slow
def test_predict_and_export_command_lines(checkpoint, tmp_path):
    """`python predict.py ckpt_path=... input=...` and `python export.py ckpt_path=...` run as a user types them."""
    np.save(tmp_path / "images.npy", load_digits()[0][:7].numpy())
    result = run_cli("predict.py", f"ckpt_path={checkpoint}", f"input={tmp_path / 'images.npy'}",
                     f"hydra.run.dir={tmp_path / 'predict'}")  # fmt: skip
    assert_ok(result)
    assert len(read_rows(tmp_path / "predict" / "predictions.csv")) == 7

    result = run_cli("export.py", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'export'}")
    assert_ok(result)
    exported = json.loads((tmp_path / "export" / "export.json").read_text())
    assert exported["format"] == "torchscript" and exported["max_abs_diff"] <= TOLERANCE


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("predict.py", [], ["ckpt_path is required"]),
        ("predict.py", ["ckpt_path={ckpt}", "device=tpu"], ["device", "'tpu'", "auto", "cpu", "cuda"]),
        ("predict.py", ["ckpt_path={ckpt}", "input={tmp}/missing.csv"], ["input=", "missing.csv", ".npy"]),
        ("export.py", ["ckpt_path={ckpt}", "format=tflite"], ["format", "'tflite'", "torchscript", "onnx"]),
        ("export.py", ["ckpt_path={tmp}/nope.ckpt"], ["ckpt_path=", "nope.ckpt", "no such file"]),
    ],
)
def test_bad_predict_and_export_options_are_one_line_errors(checkpoint, tmp_path, script, args, expected):
    """A bad option of predict.py / export.py exits 2 with the key, the value and the choices, and no traceback."""
    args = [arg.format(ckpt=checkpoint, tmp=tmp_path) for arg in args]
    result = run_cli(script, *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == UserError.exit_code, result.stderr[-3000:]
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
