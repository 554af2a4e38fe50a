"""The predict task: a checkpoint's predictions for a file of inputs (or the datamodule's test split), as a CSV.

Inputs are what the model saw in training, one sample per row or per leading index:
  .pt   a tensor saved with torch.save (read with weights_only=True), shape (N, *input_shape) or (N, prod(input_shape))
  .npy  a numpy array (read with allow_pickle=False), same shapes
  .csv  comma-separated numbers, one sample per row of prod(input_shape) values; a header line is skipped
`input_shape` comes from the checkpoint's own net config, so an MNIST checkpoint reads 28x28 rows.
"""

import csv
import logging
from pathlib import Path

import numpy as np
import torch
from hydra.utils import get_class
from lightning.pytorch import LightningModule
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from hydralight.build import build_datamodule, info, quiet_console
from hydralight.errors import UserError
from hydralight.evaluate import load_model

log = logging.getLogger(__name__)
INPUT_SUFFIXES = (".pt", ".npy", ".csv")
DEVICES = ("auto", "cpu", "cuda")


def model_input_shape(model: LightningModule, fallback: object = None) -> tuple[int, ...]:
    """The sample shape the checkpoint was trained on: its net config's `input_shape`, else `fallback`."""
    net = model.hparams.get("net") or {}
    shape = net.get("input_shape") if isinstance(net, dict) else None
    shape = shape or fallback
    if not shape:
        raise UserError("input_shape: the checkpoint's net config has none, so give it, e.g. input_shape=[1,8,8].")
    return tuple(int(size) for size in shape)


def _read_csv(path: Path) -> np.ndarray:
    """Rows of numbers; a first line that is not all numbers is a header and is skipped."""
    try:
        return np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError:
        pass
    try:
        return np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2, skiprows=1)
    except ValueError as error:
        raise UserError(f"input={str(path)!r} is not a CSV of numbers: {error}") from error


def read_inputs(path: str | Path, input_shape: tuple[int, ...]) -> Tensor:
    """The file's samples as a float tensor (N, *input_shape)."""
    path = Path(path)
    if path.suffix not in INPUT_SUFFIXES:
        raise UserError(f"input={str(path)!r}: unknown file type. Use one of: {', '.join(INPUT_SUFFIXES)}")
    if not path.is_file():
        raise UserError(f"input={str(path)!r}: no such file.")
    try:
        if path.suffix == ".pt":
            data = torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            data = _read_csv(path)
    except UserError:
        raise
    except Exception as error:  # a corrupt or foreign file: the user needs the path and the reason
        reason = (str(error).strip().splitlines() or [""])[0]
        raise UserError(f"input={str(path)!r} could not be read ({type(error).__name__}: {reason}).") from error
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, Tensor):
        raise UserError(f"input={str(path)!r} holds a {type(data).__name__}; save one tensor of samples instead.")
    data = data.float()
    expected = f"(N, {', '.join(map(str, input_shape))}) or (N, {int(np.prod(input_shape))})"
    if data.ndim < 2 or len(data) == 0:
        raise UserError(f"input={str(path)!r} has shape {tuple(data.shape)}; expected {expected} with N >= 1.")
    if tuple(data.shape[1:]) == input_shape:
        return data
    if data[0].numel() == int(np.prod(input_shape)) and data.ndim == 2:
        return data.reshape(len(data), *input_shape)
    raise UserError(f"input={str(path)!r} has shape {tuple(data.shape)}; this model expects {expected}.")


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device='cuda': this machine has no CUDA GPU. Choose one of: auto, cpu")
    return torch.device(device)


@torch.inference_mode()
def predict_batches(model: LightningModule, loader: DataLoader, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """Class probabilities for every sample (eval mode, no autograd), and the labels when the batches carry them."""
    model.eval().to(device)
    probabilities, labels = [], []
    for batch in loader:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        probabilities.append(model(x.to(device)).float().softmax(dim=-1).cpu())
        if isinstance(batch, list | tuple) and len(batch) > 1:
            labels.append(batch[1])
    return torch.cat(probabilities), (torch.cat(labels) if labels else None)


def write_predictions(path: Path, probabilities: Tensor, labels: Tensor | None = None) -> Path:
    """One row per input: index, prediction, confidence, [label,] prob_0 ... prob_{C-1}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    confidence, prediction = probabilities.max(dim=-1)
    header = ["index", "prediction", "confidence", *(["label"] if labels is not None else [])]
    header += [f"prob_{k}" for k in range(probabilities.shape[-1])]
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for index, (pred, conf, probs) in enumerate(zip(prediction.tolist(), confidence.tolist(),
                                                        probabilities.tolist(), strict=True)):  # fmt: skip
            label = [int(labels[index])] if labels is not None else []
            writer.writerow([index, pred, f"{conf:.6f}", *label, *(f"{p:.6f}" for p in probs)])
    return path


def predict(cfg: DictConfig) -> dict[str, float]:
    """Predict per `cfg`; returns {"count": N} and, when the inputs are labelled, {"accuracy": ...}."""
    quiet_console()
    info("Loading %s", cfg.ckpt_path)
    model = load_model(get_class(cfg.model_class), cfg.ckpt_path)
    device = pick_device(cfg.device)
    if cfg.input:
        inputs = read_inputs(cfg.input, model_input_shape(model, cfg.get("input_shape"))) * cfg.scale
        info("Input: %s (%d samples)", cfg.input, len(inputs))
        loader = DataLoader(TensorDataset(inputs), batch_size=cfg.batch_size)
    else:
        datamodule = build_datamodule(cfg.data)
        datamodule.setup("predict")
        loader = datamodule.predict_dataloader()
        info("Input: the test split of %s (%d samples)", cfg.data._target_, len(loader.dataset))
    probabilities, labels = predict_batches(model, loader, device)
    output = write_predictions(Path(cfg.output), probabilities, labels)
    result = {"count": float(len(probabilities))}
    if labels is not None:
        result["accuracy"] = float((probabilities.argmax(dim=-1) == labels).float().mean())
    info("Wrote %d predictions to %s%s", len(probabilities), output,
         f" (accuracy {result['accuracy']:.4f} against the split's labels)" if labels is not None else "")  # fmt: skip
    return result
