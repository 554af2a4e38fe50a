"""Per-sample transforms for the on-disk data (`data.transforms`, `data.train_transforms` in YAML).

A transform is any callable `(sample, generator) -> sample`: `sample` maps column names to tensors (one sample, no
batch dimension); `generator` is a `torch.Generator` seeded by (seed, epoch, sample index), or None when no transform
of the pipeline sets `random = True`. Seeded per sample, a random augmentation draws the same numbers for the same
sample in the same epoch whatever the number of loader workers, and again after a resume. A transform that sets
`batched = True` gives the same result applied once to a whole batch (every tensor with a leading batch dimension):
when all of a pipeline's transforms do, it runs once per batch instead of once per sample.
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

Sample = dict[str, Tensor]
Transform = Callable[[Sample, "torch.Generator | None"], Sample]


class ToUnit:
    """`column` as floats in [0, 1]: divided by `max_value` (16 for the UCI digits' pixel counts, 255 for 8-bit
    images; prepare.py writes it in the dataset's prepared.json)."""

    random = False
    batched = True  # elementwise

    def __init__(self, column: str, max_value: float) -> None:
        if not max_value > 0:
            raise ValueError(f"max_value must be > 0, got {max_value!r}")
        self.column, self.max_value = column, float(max_value)

    def __call__(self, sample: Sample, generator: torch.Generator | None) -> Sample:
        return {**sample, self.column: sample[self.column].float() / self.max_value}


class Normalize:
    """`column` minus `mean`, divided by `std` (scalars, or one value per channel of a (C, H, W) image)."""

    random = False

    def __init__(self, column: str, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.column = column
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.as_tensor(std, dtype=torch.float32)
        if (self.std <= 0).any():
            raise ValueError(f"std must be > 0, got {std!r}")

    def __call__(self, sample: Sample, generator: torch.Generator | None) -> Sample:
        value = sample[self.column].float()
        shape = (-1,) + (1,) * (value.ndim - 1) if self.mean.ndim else ()
        return {**sample, self.column: (value - self.mean.view(shape)) / self.std.view(shape)}


class RandomShift:
    """Shifts a (C, H, W) image in `column` by up to `max_shift` pixels each way, filling with zeros: the same
    augmentation as a random crop of the zero-padded image."""

    random = True

    def __init__(self, column: str, max_shift: int = 1) -> None:
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"max_shift must be a whole number >= 0, got {max_shift!r}")
        self.column, self.max_shift = column, max_shift

    def __call__(self, sample: Sample, generator: torch.Generator | None) -> Sample:
        image, pad = sample[self.column], self.max_shift
        dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
        padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
        height, width = image.shape[-2:]
        return {**sample, self.column: padded[..., dy : dy + height, dx : dx + width]}


class GaussianNoise:
    """Adds normal noise of standard deviation `std` to `column` (as floats)."""

    random = True

    def __init__(self, column: str, std: float) -> None:
        if not std >= 0:
            raise ValueError(f"std must be >= 0, got {std!r}")
        self.column, self.std = column, float(std)

    def __call__(self, sample: Sample, generator: torch.Generator | None) -> Sample:
        value = sample[self.column].float()
        return {**sample, self.column: value + self.std * torch.randn(value.shape, generator=generator)}


class NextToken:
    """A window of `block_size + 1` token ids in `column` as `input` (the first block_size) and `target` (the same
    shifted by one), long tensors: what a causal language model trains on."""

    random = False
    batched = True

    def __init__(self, column: str = "ids", input: str = "input", target: str = "target") -> None:
        self.column, self.input, self.target = column, input, target

    def __call__(self, sample: Sample, generator: torch.Generator | None) -> Sample:
        window = sample[self.column].long()
        return {**sample, self.input: window[..., :-1], self.target: window[..., 1:]}


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator for one sample of one epoch: its seed mixes the three numbers (numpy's SeedSequence), so nearby
    indices or epochs get unrelated streams."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class Pipeline:
    """Transforms applied in order to each sample of a batch; generators are only made when one of them is random."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)
        self.random = any(getattr(transform, "random", True) for transform in self.transforms)
        self.batched = all(getattr(transform, "batched", False) for transform in self.transforms)

    def __bool__(self) -> bool:
        return bool(self.transforms)

    def on_batch(self, batch: Sample) -> Sample:
        """The transforms applied once to a whole batch (only when every one of them is `batched`)."""
        for transform in self.transforms:
            batch = transform(batch, None)
        return batch

    def __call__(self, sample: Sample, seed: int, epoch: int, index: int) -> Sample:
        generator = sample_generator(seed, epoch, index) if self.random else None
        for transform in self.transforms:
            sample = transform(sample, generator)
        return sample
