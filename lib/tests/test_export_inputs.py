"""export.py exports every input of a module, as Lightning passes its `example_input_array` (a dict by keyword, a
tuple in order): each file takes them all under forward's names, and its outputs follow the mask, proving the mask is
an input and not a constant traced into the file. The task is hydralight.testing's masked mean (model=masked_mean
data=masked_mean: values and a mask), never an example's."""

import json
import warnings
from pathlib import Path

import pytest
import torch

from hydralight.core import export as export_module
from hydralight.core.errors import UserError
from hydralight.core.export import (
    EXPORTERS,
    FORMATS,
    ExportMismatch,
    call,
    example_batch,
    random_batch,
    random_mask,
    run_exported,
)
from hydralight.core.export import export as export_task
from hydralight.core.train import train
from hydralight.testing import QUICK, compose, run_cli
from hydralight.testing.masked import MaskedMeanRegression

TOLERANCE = 1e-5
MASKED = ("model=masked_mean", "data=masked_mean")


def needs(fmt: str) -> None:
    if fmt == "onnx":
        for package in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(package)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """One epoch of the masked mean on its tiny data; its last checkpoint."""
    run_dir = tmp_path_factory.mktemp("masked") / "run"
    train(compose("train", run_dir, (*QUICK, *MASKED)))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def model(checkpoint) -> MaskedMeanRegression:
    return MaskedMeanRegression.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    """Four samples of 6 steps, each row's mask with kept and dropped steps, at a batch size export never drew."""
    values = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0], [1, 1, 0, 1, 0, 1]])
    return {"values": values, "mask": mask}


def with_step_dropped(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same values with one more step of the first row masked out."""
    mask = batch["mask"].clone()
    mask[0, 2] = 0
    return {"values": batch["values"], "mask": mask}


def input_names_of(path: Path, fmt: str) -> list[str]:
    """The inputs the exported file itself declares, read as its users would read them."""
    if fmt == "onnx":
        import onnxruntime

        return [node.name for node in onnxruntime.InferenceSession(str(path)).get_inputs()]
    if fmt == "exported_program":
        return list(torch.export.load(str(path)).graph_signature.user_inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load
        return [argument.name for argument in torch.jit.load(str(path)).forward.schema.arguments[1:]]  # after self


def assert_follows_the_mask(path: Path, fmt: str, model: torch.nn.Module, batch: dict) -> None:
    """The file's outputs equal the eager module's on `batch`, and on `batch` with one step dropped, which differ."""
    outputs = []
    for inputs in (batch, with_step_dropped(batch)):
        with torch.no_grad():
            expected = call(model, inputs)
        outputs.append(run_exported(path, fmt, inputs))
        assert (outputs[-1] - expected).abs().max().item() <= TOLERANCE
    changed = (outputs[0] - outputs[1]).abs() > 1e-4
    assert changed.tolist() == [True, False, False, False]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_dict_input_exports_every_input_by_name(make_cfg, model, checkpoint, batch, fmt):
    """export.py of the masked mean writes a file that takes values and mask (ONNX inputs ['values', 'mask']), passes
    its own check, and gives the checkpoint's outputs whatever the mask; tracing it warns of nothing."""
    needs(fmt)
    cfg = make_cfg(f"ckpt_path={checkpoint}", f"format={fmt}", config_name="export", quick=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        result = export_task(cfg)
    assert result["max_abs_diff"] <= TOLERANCE
    path = Path(result["path"])
    assert input_names_of(path, fmt) == ["values", "mask"]
    assert_follows_the_mask(path, fmt, model, batch)


class TupleMaskedMean(MaskedMeanRegression):
    """The masked mean with a tuple example_input_array: Lightning passes its inputs in order."""

    def __init__(self) -> None:
        super().__init__()
        self.example_input_array = (torch.zeros(1, 6, 3), torch.ones(1, 6, dtype=torch.long))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tuple_input_exports_every_input_under_forwards_names(tmp_path, batch, fmt):
    """A tuple example_input_array exports both inputs, named by forward's parameters, checked on a random batch, and
    the file follows the mask as the module does."""
    needs(fmt)
    model = TupleMaskedMean().eval()
    generator = torch.Generator().manual_seed(0)
    path = tmp_path / f"model.{fmt}"
    EXPORTERS[fmt](model, random_batch(model, example_batch(model), 2, generator), path)
    assert input_names_of(path, fmt) == ["values", "mask"]
    check = random_batch(model, example_batch(model), 5, generator)
    with torch.no_grad():
        assert (run_exported(path, fmt, check) - call(model, check)).abs().max().item() <= TOLERANCE
    positional = {"values": batch["values"], "mask": batch["mask"]}
    outputs = [run_exported(path, fmt, tuple(inputs.values())) for inputs in (positional, with_step_dropped(batch))]
    with torch.no_grad():
        assert (outputs[0] - model(*positional.values())).abs().max().item() <= TOLERANCE
    assert not torch.allclose(outputs[0], outputs[1])


def test_the_check_draws_a_mask_of_kept_and_dropped_steps_and_ids_the_module_can_look_up():
    """Every row of a drawn mask keeps a step and drops one (an all-ones mask passes a module that ignores it); token
    ids stay below the module's smallest embedding; floats are standard normal."""
    mask = random_mask((50, 7), torch.Generator().manual_seed(0))
    assert set(mask.unique().tolist()) == {0, 1}
    assert (mask.sum(dim=1) >= 1).all() and (mask.sum(dim=1) <= 6).all()

    class Tokens(MaskedMeanRegression):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(11, 3)
            self.example_input_array = {"ids": torch.zeros(1, 6, dtype=torch.long), "mask": torch.ones(1, 6).bool()}

    drawn = random_batch(Tokens(), Tokens().example_input_array, 200, torch.Generator().manual_seed(0))
    assert drawn["ids"].dtype == torch.long and drawn["ids"].min() >= 0 and drawn["ids"].max() == 10
    assert drawn["mask"].dtype == torch.bool and (~drawn["mask"]).any(dim=1).all()
    values = random_batch(TupleMaskedMean(), TupleMaskedMean().example_input_array, 200, torch.Generator())[0]
    assert values.mean().abs() < 0.1 and (values < 0).any()


def test_a_mismatch_is_one_line_and_keeps_the_file(make_cfg, checkpoint, monkeypatch):
    """An exported file whose outputs differ from the checkpoint's is one line naming tolerance= and the inputs, a
    non-zero exit; the file and export.json stay for a look."""
    exported = export_module.run_exported
    monkeypatch.setattr(export_module, "run_exported", lambda *args: exported(*args) + 1e-3)
    cfg = make_cfg(f"ckpt_path={checkpoint}", "format=exported_program", config_name="export", quick=False)
    with pytest.raises(
        ExportMismatch, match=r"^tolerance=1e-05: .*model\.pt2 differs .* up to 0\.001 .*values, mask"
    ) as e:
        export_task(cfg)
    assert "\n" not in str(e.value) and e.value.exit_code != 0
    assert json.loads((Path(cfg.paths.output_dir) / "export.json").read_text())["max_abs_diff"] > TOLERANCE
    assert (Path(cfg.paths.output_dir) / "model.pt2").is_file()


def test_input_shape_of_a_model_of_several_inputs_is_one_line(checkpoint, project):
    """`export.py input_shape=[6,3]` for a module of two inputs says, in one line and exit 2, that input_shape is for
    single-input models and to set example_input_array."""
    result = run_cli(str(project / "export.py"), f"ckpt_path={checkpoint}", "input_shape=[6,3]", cwd=project)
    assert result.returncode == UserError.exit_code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: input_shape=[6, 3] applies only to single-input models; MaskedMeanRegression takes 2 inputs "
        "(values, mask): set its example_input_array instead."
    ], result.stderr[-3000:]
    assert not list(project.rglob("model.pt"))
