"""Saves and restores every random number generator, so a resumed run continues exactly as if never stopped."""

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback


class RNGState(Callback):
    """torch (CPU and CUDA), numpy and python RNG states in the checkpoint, as tensors and lists only.

    Without it a resumed run replays the first epoch's shuffle order and dropout masks. The state goes into the
    checkpoint through `state_dict` and comes back in `load_state_dict`, which Lightning calls before it builds the
    resumed train iterator: restoring any later (say in `on_train_epoch_start`) is too late for the shuffle order.
    Plain containers keep `torch.load(weights_only=True)` working.
    """

    def state_dict(self) -> dict[str, Any]:
        version, mt_state, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gauss],
            "python": [version, list(mt_state), gauss],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        kind, keys, pos, has_gauss, cached_gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gauss))
        version, mt_state, gauss = state_dict["python"]
        random.setstate((version, tuple(mt_state), gauss))
