"""eval.py, predict.py and export.py rebuild the checkpoint's own task (its module class, the data it was trained on);
predict writes one row per input from the module's predict_step, reading raw samples as training does; export writes
TorchScript / ExportedProgram / ONNX files whose outputs match the checkpoint's within 1e-5; neither ever writes over
a file that is already there. The task is hydralight.testing's image classifier (model=image_classifier
data=images: raw pixels the data module scales, labels), never an example's; eval.py's own data is the regression."""

import csv
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from omegaconf import OmegaConf

from hydralight.core.callbacks import TaskRecord
from hydralight.core.errors import UserError
from hydralight.core.evaluate import evaluate
from hydralight.core.export import FORMATS, run_exported
from hydralight.core.export import export as export_task
from hydralight.core.predict import predict
from hydralight.core.runs.checkpoints import TASK_KEY
from hydralight.core.train import train
from hydralight.testing import QUICK, assert_ok, compose, run_cli
from hydralight.testing.images import PIXEL_MAX, ImageClassifier, random_images, split_rows

TOLERANCE = 1e-5
IMAGES = ("data=images", "model=image_classifier")  # conf/data/images.yaml: 150 images, 20% of them the test split
TEST_SPLIT_SIZE = 30
IMAGE_DATA = "hydralight.testing.images.ImageData"


def best_of(run_dir: Path) -> Path:
    return next(path for path in (run_dir / "checkpoints").glob("*.ckpt") if path.name != "last.ckpt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """One tiny run of the image classifier, shared by this module's tests, and the test metrics it reported."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train(compose("train", run_dir, (*QUICK, *IMAGES)))
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def checkpoint(trained) -> Path:
    """The run's best checkpoint."""
    return best_of(trained[0])


@pytest.fixture(scope="module")
def model(checkpoint) -> ImageClassifier:
    return ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Twenty images as the model sees them: (20, 1, 8, 8) in [0, 1]."""
    return torch.from_numpy(random_images(20, seed=5)[0]).float() / PIXEL_MAX


@pytest.fixture(scope="module")
def raw_test_split() -> np.ndarray:
    """The test split as raw rows, 64 pixel values 0..16 and the label, straight from the images data=images draws."""
    raw, labels = random_images(150)
    test = split_rows(150, val_fraction=0.1, test_fraction=0.2, split_seed=0)["test"].numpy()  # conf/data/images.yaml
    return np.concatenate([raw[test].reshape(len(test), -1), labels[test, None]], axis=1)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def predicted(rows: list[dict[str, str]]) -> list[int]:
    return [int(row["prediction"]) for row in rows]


def run_in(project: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """`python <project>/<script> <args>` typed in the dir above the project, with the default run dirs (outputs/
    there)."""
    return run_cli(str(project / script), *args, cwd=project.parent)


def assert_one_line_error(result: subprocess.CompletedProcess, *texts: str) -> None:
    assert result.returncode == UserError.exit_code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for text in texts:
        assert text in errors[0]


# ---------------------------------------------------------------- the checkpoint's own task


def test_checkpoints_load_weights_only_and_say_what_they_were_trained_on(trained):
    """Every checkpoint of a run loads with torch.load(weights_only=True) and names its module class and data."""
    run_dir, _ = trained
    paths = list((run_dir / "checkpoints").glob("*.ckpt"))
    assert len(paths) >= 2  # the best and last.ckpt
    for path in paths:
        record = torch.load(path, map_location="cpu", weights_only=True)[TASK_KEY]
        assert record["module"] == "hydralight.testing.images.ImageClassifier"
        assert record["data"]["_target_"] == IMAGE_DATA


@pytest.mark.parametrize("where", ["run dir", "copied out"])
def test_eval_of_a_checkpoint_tests_on_the_data_it_was_trained_on(make_cfg, trained, tmp_path, where):
    """eval.py with its default config (data=regression) tests an image classifier's checkpoint on its images,
    reproducing the run's test metrics, with data.<key>= overrides on top: in its run dir, from the run's
    .hydra/config.yaml (which wins over the checkpoint's record: here the record names other images, and only the
    run's config the right ones), and copied out of its run dir, from the checkpoint's own record."""
    run_dir, metrics = trained
    if where == "run dir":
        run = tmp_path / "run"
        (run / "checkpoints").mkdir(parents=True)
        saved = torch.load(best_of(run_dir), map_location="cpu", weights_only=True)
        saved[TASK_KEY]["data"]["seed"] = 1  # other images, of another test loss
        ckpt = run / "checkpoints" / "best.ckpt"
        torch.save(saved, ckpt)
        (run / ".hydra").mkdir()
        OmegaConf.save(compose("train", run, (*QUICK, *IMAGES)), run / ".hydra" / "config.yaml")  # unresolved
    else:
        ckpt = tmp_path / "copied.ckpt"
        shutil.copy(best_of(run_dir), ckpt)
    overrides = [f"ckpt_path={ckpt}", "data.batch_size=8"]
    cfg = make_cfg(*overrides, config_name="eval")
    evaluated = evaluate(cfg, overrides=overrides)
    assert evaluated["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-5)
    assert (cfg.data._target_, cfg.data.batch_size) == (IMAGE_DATA, 8)


def test_eval_reports_the_model_overrides_it_ignores(make_cfg, checkpoint, caplog):
    """`eval.py ckpt_path=<classifier ckpt> model=image_classifier model.hidden=32` tests the checkpoint's classifier
    of 16 hidden units and says the overrides were ignored."""
    overrides = [f"ckpt_path={checkpoint}", "model=image_classifier", "model.hidden=32"]
    with caplog.at_level(logging.INFO):
        assert "test/loss" in evaluate(make_cfg(*overrides, config_name="eval"), overrides=overrides)
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("ignored:")]
    assert lines == ["ignored: model=image_classifier model.hidden=32: the model is rebuilt from the checkpoint"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"module": "collections.OrderedDict"}, r"names 'collections.OrderedDict' \(_target_\), which this project"),
        (
            {"module": "hydralight.testing.tasks.TinyNet"},
            r"names 'hydralight.testing.tasks.TinyNet', which is not a LightningModule",
        ),
        ({"data": {"_target_": "os.getcwd"}}, r"names 'os.getcwd' \(task.data._target_\), which this project"),
        (
            {"data": {"_target_": IMAGE_DATA, "extra": {"_target_": "os.system"}}},
            r"names 'os.system' \(task.data.extra._target_\), which this project does not build",
        ),
    ],
)
def test_a_checkpoints_record_builds_only_lightning_classes(make_cfg, checkpoint, tmp_path, change, message):
    """A checkpoint is data: a record naming what the project's configs do not, or a class of the project that is no
    LightningModule / LightningDataModule, is refused with one line before anything is built."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    saved[TASK_KEY] = {**saved[TASK_KEY], **change}
    torch.save(saved, tmp_path / "tampered.ckpt")
    overrides = [f"ckpt_path={tmp_path / 'tampered.ckpt'}"]
    with pytest.raises(UserError, match=message):
        evaluate(make_cfg(*overrides, config_name="eval"), overrides=overrides)


# ---------------------------------------------------------------- predict


def test_predict_defaults_to_the_test_split_one_row_per_sample(make_cfg, model, checkpoint):
    """With no input, predict writes one row per test-split image, with its label, the model's argmax and every
    class's probability; the accuracy is the rows' own."""
    cfg = make_cfg(f"ckpt_path={checkpoint}", config_name="predict", quick=False)
    result = predict(cfg)
    rows = read_rows(Path(cfg.output))
    assert len(rows) == result["count"] == TEST_SPLIT_SIZE
    assert list(rows[0])[:4] == ["index", "prediction", "confidence", "label"]
    assert [int(row["index"]) for row in rows] == list(range(TEST_SPLIT_SIZE))
    labels = np.array([int(row["label"]) for row in rows])
    assert result["accuracy"] == pytest.approx(float((np.array(predicted(rows)) == labels).mean()))
    probabilities = np.array([[float(row[f"prob_{k}"]) for k in range(3)] for row in rows])
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(TEST_SPLIT_SIZE), abs=1e-5)


@pytest.mark.parametrize("labelled", [True, False], ids=["with-labels", "pixels-only"])
def test_predict_reads_raw_rows_as_training_does(make_cfg, checkpoint, raw_test_split, tmp_path, labelled):
    """A CSV of raw rows (pixel values 0..16, as the dataset holds them) gives exactly the test split's predictions,
    and with a label column its accuracy too."""
    split = make_cfg(f"ckpt_path={checkpoint}", f"output={tmp_path / 'split.csv'}", config_name="predict", quick=False)
    expected = predict(split)
    rows = raw_test_split if labelled else raw_test_split[:, :-1]
    np.savetxt(tmp_path / "images.csv", rows, delimiter=",", fmt="%d")
    cfg = make_cfg(f"ckpt_path={checkpoint}", f"input={tmp_path / 'images.csv'}", config_name="predict", quick=False)
    result = predict(cfg)
    assert predicted(read_rows(Path(cfg.output))) == predicted(read_rows(tmp_path / "split.csv"))
    assert result == (expected if labelled else {"count": expected["count"]})


def test_predict_reads_pt_npy_and_csv_inputs_alike(make_cfg, model, checkpoint, images, tmp_path):
    """The same raw images as a .pt (N,1,8,8), an .npy (N,64) and a .csv with a header give the same predictions,
    one per input, equal to the checkpoint's own argmax on the training-scaled images."""
    raw = images * PIXEL_MAX
    torch.save(raw, tmp_path / "images.pt")
    np.save(tmp_path / "images.npy", raw.reshape(len(raw), -1).numpy())
    np.savetxt(tmp_path / "images.csv", raw.reshape(len(raw), -1).numpy(), delimiter=",",
               header=",".join(f"pixel{i}" for i in range(64)), comments="")  # fmt: skip
    with torch.no_grad():
        expected = model(images).argmax(dim=-1).tolist()
    for name in ("images.pt", "images.npy", "images.csv"):
        output = tmp_path / f"{name}.predictions.csv"
        cfg = make_cfg(f"ckpt_path={checkpoint}", f"input={tmp_path / name}", f"output={output}",
                       config_name="predict", quick=False)  # fmt: skip
        assert predict(cfg) == {"count": len(images)}  # no labels in these files, so no accuracy
        rows = read_rows(output)
        assert "label" not in rows[0]
        assert predicted(rows) == expected, name


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("wrong_shape.npy", np.zeros((3, 10), dtype=np.float32), r"shape \(3, 10\).*\(N, 1, 8, 8\), \(N, 64\)"),
        ("not_numbers.csv", "a,b\nc,d\n", "not a CSV of numbers"),
        ("bad_value.csv", "1,2\n3,x\n", r"not a CSV of numbers: could not convert string 'x'.* on line 2, column 2"),
        ("bad_after_header.csv", "a,b\n1,2\n3,x\n", r"'x'.* on line 3, column 2"),  # as an editor numbers lines
        ("a_dict.pt", {"x": torch.zeros(2, 64)}, "holds a dict"),
        ("garbage.pt", b"not a torch file", "could not be read"),
        ("images.txt", "1,2,3", r"unknown file type.*\.pt, \.npy, \.csv"),
        ("nan.csv", "\n".join(["0," * 63 + "0"] * 2 + ["0," * 10 + "nan," + "0," * 52 + "0"]), r"NaN or inf in row 2"),
        ("inf.npy", np.array([[0.0] * 64, [np.inf] + [0.0] * 63]), r"NaN or inf in row 1"),
        ("bad_label.csv", ",".join(["1"] * 64) + ",3\n", r"label 3 in row 0.*0\.\.2"),  # 3 classes
    ],
)
def test_predict_bad_input_is_a_user_error_naming_it(make_cfg, checkpoint, tmp_path, name, content, message):
    """An unreadable, foreign, wrongly shaped or non-finite input file is a UserError naming input= and the problem
    (for NaN/inf: the first bad row), and no predictions file is written."""
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, dict):
        torch.save(content, path)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    cfg = make_cfg(f"ckpt_path={checkpoint}", f"input={path}", config_name="predict", quick=False)
    with pytest.raises(UserError, match=rf"input={re.escape(repr(str(path)))}.*" + message):
        predict(cfg)
    assert not Path(cfg.output).exists()


# ---------------------------------------------------------------- nothing on disk is lost


@pytest.mark.parametrize("task", ["predict", "export"])
def test_an_existing_output_is_refused_byte_identical_unless_overwrite(make_cfg, checkpoint, tmp_path, task):
    """output=<a file that exists> is refused and the file left byte for byte; overwrite=true replaces it."""
    run = predict if task == "predict" else export_task
    output = tmp_path / ("mine.csv" if task == "predict" else "mine.pt")
    output.write_bytes(b"the user's own file\n")
    cfg = make_cfg(f"ckpt_path={checkpoint}", f"output={output}", config_name=task, quick=False)
    with pytest.raises(UserError, match=rf"output={re.escape(repr(str(output)))} already exists.*overwrite=true"):
        run(cfg)
    assert output.read_bytes() == b"the user's own file\n"
    run(make_cfg(f"ckpt_path={checkpoint}", f"output={output}", "overwrite=true", config_name=task, quick=False))
    assert output.read_bytes() != b"the user's own file\n"
    assert not [path for path in tmp_path.iterdir() if ".partial" in path.name]  # no temporary file left behind


@pytest.mark.parametrize("task", ["predict", "export"])
def test_output_a_directory_or_the_checkpoint_is_refused(make_cfg, checkpoint, tmp_path, task):
    """output=<a dir> is a one-line error; so is output=<the checkpoint>, even with overwrite=true."""
    run = predict if task == "predict" else export_task
    with pytest.raises(UserError, match=rf"output={re.escape(repr(str(tmp_path)))} is a directory; give a file path"):
        run(make_cfg(f"ckpt_path={checkpoint}", f"output={tmp_path}", config_name=task, quick=False))
    before = checkpoint.read_bytes()
    cfg = make_cfg(f"ckpt_path={checkpoint}", f"output={checkpoint}", "overwrite=true", config_name=task, quick=False)
    with pytest.raises(UserError, match="is the checkpoint being read"):
        run(cfg)
    assert checkpoint.read_bytes() == before


def test_refused_outputs_from_the_command_line(checkpoint, project, tmp_path):
    """As typed in another directory: `export.py output=<the checkpoint>`, `predict.py output=<existing file>` and
    `predict.py output=<dir>` exit 2 with one line, no traceback, before torch is imported; the files are intact."""
    before = checkpoint.read_bytes()
    assert_one_line_error(run_in(project, "export.py", f"ckpt_path={checkpoint}", f"output={checkpoint}"),
                          "output=", "is the checkpoint being read")  # fmt: skip
    assert checkpoint.read_bytes() == before
    (tmp_path / "images.csv").write_text("mine\n")
    assert_one_line_error(run_in(project, "predict.py", f"ckpt_path={checkpoint}", "output=images.csv"),
                          "output='images.csv' already exists", "overwrite=true")  # fmt: skip
    assert (tmp_path / "images.csv").read_text() == "mine\n"
    (tmp_path / "out").mkdir()
    assert_one_line_error(run_in(project, "predict.py", f"ckpt_path={checkpoint}", "output=out"),
                          "output='out' is a directory")  # fmt: skip


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_round_trip_matches_the_checkpoint(make_cfg, model, checkpoint, images, fmt):
    """Each export format, loaded back, gives the checkpoint's outputs within 1e-5 on images like its data's and on a
    batch size other than the one it was exported with."""
    if fmt == "onnx":
        for package in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(package)
    cfg = make_cfg(f"ckpt_path={checkpoint}", f"format={fmt}", config_name="export", quick=False)
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
    cfg = make_cfg(f"ckpt_path={checkpoint}", f"output={tmp_path / 'model.pt'}", config_name="export", quick=False)
    export_task(cfg)
    torch.save(images, tmp_path / "images.pt")
    script = (
        "import sys, torch; model = torch.jit.load(sys.argv[1]); x = torch.load(sys.argv[2], weights_only=True);"
        "print(model(x).argmax(-1).tolist()); assert not any(m.startswith('hydralight') for m in sys.modules)"
    )
    result = run_cli("-c", script, str(tmp_path / "model.pt"), str(tmp_path / "images.pt"), cwd=tmp_path)
    assert_ok(result)
    with torch.no_grad():
        assert result.stdout.strip() == str(model(images).argmax(dim=-1).tolist())


def test_export_of_any_lightning_module_takes_its_sample_shape(make_cfg, tmp_path):
    """A module of another task (Lightning's BoringModel, no example_input_array) exports with input_shape=, and
    without it says in one line what to give."""
    trainer = Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path, callbacks=[TaskRecord(None)])  # fmt: skip
    trainer.fit(BoringModel())
    trainer.save_checkpoint(tmp_path / "boring.ckpt")
    # A checkpoint is data: its module is built because a config of the project names it.
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "boring.yaml").write_text(f"_target_: {BoringModel.__module__}.BoringModel\n")
    task = (f"ckpt_path={tmp_path / 'boring.ckpt'}", f"hydra.searchpath=[file://{tmp_path / 'conf'}]")
    with pytest.raises(UserError, match=r"input_shape: BoringModel has no example_input_array.*input_shape=\["):
        export_task(make_cfg(*task, config_name="export", quick=False))
    cfg = make_cfg(*task, "input_shape=[32]", config_name="export", quick=False)
    assert export_task(cfg)["max_abs_diff"] <= TOLERANCE


# ---------------------------------------------------------------- the command lines, as typed


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
def test_bad_predict_and_export_options_are_one_line_errors(checkpoint, project, tmp_path, script, args, expected):
    """A bad option of predict.py / export.py exits 2 with the key, the value and the choices, and no traceback."""
    args = [arg.format(ckpt=checkpoint, tmp=tmp_path) for arg in args]
    assert_one_line_error(run_in(project, script, *args), *expected)
