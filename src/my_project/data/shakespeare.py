"""Tiny Shakespeare as characters, shipped inside the package (see SHAKESPEARE_LICENSE.md): the text task's data.

The text is split into three contiguous parts (train, then val, then test), so no character of the validation or
test text is ever trained on. Samples are windows of `block_size + 1` characters: the input is the first
`block_size`, the target the same window shifted by one.
"""

import gzip
import json
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from hydralight.core.errors import UserError
from hydralight.data.base import at_current_epoch, data_shard, loader_generator, run_seed
from hydralight.data.sources import Row, check_fractions

SHAKESPEARE_FILE = "tinyshakespeare.txt.gz"


def read_text(path: str | Path | None = None) -> str:
    """The embedded Tiny Shakespeare, or a UTF-8 text file (gzip-compressed when its name ends in .gz)."""
    if path is None:
        with resources.as_file(resources.files("my_project.data") / SHAKESPEARE_FILE) as embedded:
            return gzip.decompress(embedded.read_bytes()).decode("utf-8")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.text_path={str(path)!r} is no such file. Give a UTF-8 text file, or null for Tiny "
                        "Shakespeare.")  # fmt: skip
    data = path.read_bytes()
    try:
        return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"data.text_path={str(path)!r} is not UTF-8 text ({error}).") from error


class Windows(Dataset):
    """Every window of `block_size + 1` ids starting at a multiple of `stride`, as (input, target) long tensors."""

    def __init__(self, ids: Tensor, block_size: int, stride: int) -> None:
        self.ids = ids  # the split's text, as character ids
        self.windows = ids.unfold(0, block_size + 1, stride)  # a view: (num_windows, block_size + 1), no copy

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        window = self.windows[index].long()
        return window[:-1], window[1:]

    def __getitems__(self, indices: list[int]) -> list[Tensor]:
        """A whole batch in one indexing operation (the DataLoader calls this with each batch of indices)."""
        windows = self.windows[torch.as_tensor(indices, dtype=torch.long)].long()
        return [windows[:, :-1], windows[:, 1:]]


def collate_windows(batch: list[Tensor]) -> list[Tensor]:
    """`Windows.__getitems__` already made the batch."""
    return batch


class RandomWindowSampler(DistributedSampler):
    """`samples_per_epoch` window starts drawn at random (with replacement) from the seed and the epoch, split
    between the ranks: every rank draws the same starts and keeps its own share, so a run trains on the same
    windows on any number of processes, and a resumed run redraws exactly the epoch it resumes.

    A DistributedSampler, so that Lightning keeps it under DDP instead of putting its own in its place.
    """

    def __init__(
        self, dataset: Dataset, samples_per_epoch: int, num_replicas: int = 1, rank: int = 0, seed: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.num_samples = samples_per_epoch // num_replicas
        self.total_size = self.num_samples * num_replicas

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)  # Lightning calls set_epoch each epoch
        starts = torch.randint(len(self.dataset), (self.total_size,), generator=generator)
        # A generator: the starts are drawn at the first batch, after Lightning set the epoch, not when the
        # stateful loader builds its iterator (for a resumed run, before the epoch is known).
        yield from starts[self.rank : self.total_size : self.num_replicas].tolist()


class ShakespeareDataModule(LightningDataModule):
    """Character windows of Tiny Shakespeare (or of `text_path`), held in memory as one tensor of character ids.

    `vocab` is the sorted set of the text's characters. It is a config value (conf/data/shakespeare.yaml) so that
    the model config can read it (`${data.vocab}`) and keep it in the checkpoint's hyperparameters: a checkpoint
    alone encodes prompts and decodes generated text. It is checked against the text; null computes it.
    """

    def __init__(
        self,
        vocab: str | None = None,
        block_size: int = 64,
        batch_size: int = 32,
        samples_per_epoch: int = 9600,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        text_path: str | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__()
        self.vocab = vocab
        self.block_size = block_size
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.text_path = text_path
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.splits: dict[str, Windows] = {}

    @property
    def vocab_size(self) -> int | None:
        return None if self.vocab is None else len(self.vocab)

    def encode(self, text: str) -> Tensor:
        """The text's characters as ids into `vocab`, in the smallest dtype that holds them (uint8 for <= 256)."""
        index = {char: i for i, char in enumerate(self.vocab)}
        dtype = torch.uint8 if len(self.vocab) <= 256 else torch.int32
        return torch.tensor([index[char] for char in text], dtype=dtype)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        text = read_text(self.text_path)
        found = "".join(sorted(set(text)))
        if self.vocab is None:
            self.vocab = found
        elif self.vocab != found:
            source = self.text_path or SHAKESPEARE_FILE
            # JSON's quoting is YAML's double-quoted string: the value can be pasted into a data config.
            raise UserError(
                f"data.vocab={json.dumps(self.vocab)} is not the character set of {source}. Its sorted characters: "
                f"vocab: {json.dumps(found)}"
            )
        ids = self.encode(text)
        n_test, n_val = round(len(ids) * self.test_fraction), round(len(ids) * self.val_fraction)
        n_train = len(ids) - n_val - n_test
        train, val, test = ids[:n_train], ids[n_train : n_train + n_val], ids[n_train + n_val :]
        for name, part in (("train", train), ("val", val), ("test", test)):
            if len(part) <= self.block_size:
                raise UserError(
                    f"the {name} text has {len(part)} characters, fewer than data.block_size + 1="
                    f"{self.block_size + 1}: raise data.{name}_fraction or lower data.block_size."
                )
        # Training may start a window anywhere in its text; validation and test read theirs once, end to end.
        self.splits = {
            "train": Windows(train, self.block_size, stride=1),
            "val": Windows(val, self.block_size, stride=self.block_size),
            "test": Windows(test, self.block_size, stride=self.block_size),
        }

    def _loader(self, dataset: Dataset, sampler: DistributedSampler | None) -> StatefulDataLoader:
        return StatefulDataLoader(  # resumable mid-epoch (see data/base.py)
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=collate_windows,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            generator=loader_generator(),
        )

    def train_dataloader(self) -> StatefulDataLoader:
        world_size, rank = data_shard(self.trainer)
        sampler = RandomWindowSampler(self.splits["train"], self.samples_per_epoch, world_size, rank, run_seed())
        sampler = at_current_epoch(sampler, self.trainer)
        return self._loader(self.splits["train"], sampler)

    def _eval_loader(self, name: str) -> StatefulDataLoader:
        world_size, rank = data_shard(self.trainer)
        # Unpadded shards: N processes average exactly the windows one process sees.
        sampler = None
        if world_size > 1:
            sampler = UnrepeatedDistributedSampler(self.splits[name], num_replicas=world_size, rank=rank, shuffle=False)
        return self._loader(self.splits[name], sampler)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> StatefulDataLoader:
        return self._eval_loader("test")


class TextSource:
    """A text as windows of `block_size + 1` character ids, one window every `block_size` characters (so each
    next-character pair is in exactly one window), split in order: train, then val, then test.

    The text (Tiny Shakespeare, or every .txt / .txt.gz file under `path`, in name order) is read one file at a time
    and its ids kept in a temporary memory-mapped file, so it need not fit in memory; its sorted characters are the
    vocabulary (`vocab` in prepared.json, which the GPT's config reads).
    """

    def __init__(
        self, path: str | None = None, block_size: int = 64, val_fraction: float = 0.05, test_fraction: float = 0.05
    ) -> None:
        check_fractions(val_fraction, test_fraction)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise UserError(f"source.block_size={block_size!r} must be a whole number >= 1.")
        self.block_size = block_size
        files = self._files(path)
        chars: set[str] = set()
        length = 0
        for file in files:
            text = read_text(file)
            chars.update(text)
            length += len(text)
        self.vocab = "".join(sorted(chars))
        dtype = np.uint8 if len(self.vocab) <= 256 else np.int32
        self._scratch = tempfile.NamedTemporaryFile(suffix=".ids")  # noqa: SIM115 (lives as long as the source)
        self.ids = np.memmap(self._scratch.name, dtype=dtype, mode="w+", shape=(max(length, 1),))
        index = {char: i for i, char in enumerate(self.vocab)}
        offset = 0
        for file in files:
            text = read_text(file)
            self.ids[offset : offset + len(text)] = np.fromiter(map(index.__getitem__, text), dtype, len(text))
            offset += len(text)
        n_test, n_val = round(length * test_fraction), round(length * val_fraction)
        n_train = length - n_val - n_test
        self.bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, length)}
        for split, (start, stop) in self.bounds.items():
            if stop - start <= block_size:
                raise UserError(
                    f"the {split} text has {stop - start} characters, fewer than source.block_size + 1="
                    f"{block_size + 1}: raise source.{split}_fraction or lower source.block_size."
                )

    @staticmethod
    def _files(path: str | None) -> list[str | None]:
        if path is None:
            return [None]  # read_text's embedded Tiny Shakespeare
        root = Path(path)
        if root.is_file():
            return [str(root)]
        files = sorted(str(file) for file in root.rglob("*") if file.name.endswith((".txt", ".txt.gz")))
        if not files:
            raise UserError(f"source.path={path!r} is no text file and no folder of .txt files.")
        return files

    @property
    def columns(self) -> dict[str, tuple[list[int], str]]:
        return {"ids": ([self.block_size + 1], self.ids.dtype.name)}

    def rows(self, split: str) -> Iterator[Row]:
        start, stop = self.bounds[split]
        for window in range(start, stop - self.block_size, self.block_size):
            yield {"ids": np.asarray(self.ids[window : window + self.block_size + 1])}

    def description(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "block_size": self.block_size}
