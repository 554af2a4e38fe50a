"""Data larger than memory: a dataset that `python prepare.py` wrote to disk, read by loader workers.

The format is Hugging Face `datasets`' own (`save_to_disk`): Apache Arrow files that every process memory-maps, so a
worker reads the pages of the rows it is asked for and the data never has to fit in RAM. It is map-style (any row by
its index), which is what makes the rest exact: a sampler decides the order from the seed and the epoch, a
`StatefulDataLoader` keeps the position in every checkpoint, and a resumed run reads exactly the rows the
uninterrupted one would have. `prepared.json` beside the Arrow files says what the columns are (shapes, classes,
vocabulary); configs read it with `${prepared:<path>,<key>}`. A data module given `prepare_if_missing` writes its
dataset itself on first use (Lightning's `prepare_data`) where nothing is prepared yet.
"""

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from omegaconf import OmegaConf
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from hydralight.core.errors import UserError
from hydralight.core.prepared import read_prepared, require_datasets, same_dir
from hydralight.data.base import at_current_epoch, data_shard, loader_generator, run_seed
from hydralight.data.transforms import Pipeline, Transform


class ShardedBatches(DistributedSampler):
    """Batches of row indices for one data-parallel process: every row exactly once per epoch over all processes,
    the same number of batches on each, and N processes at batch B together read, step by step, the rows one process
    reads at batch N x B.

    The epoch's order (a permutation by seed + epoch, or 0..n-1) is cut into steps of N x B rows; each step is dealt
    out to the N processes in turn (row k of the step to process k mod N). A last step of fewer than N rows, which
    could not give every process a row, joins the step before it. Nothing is padded or dropped, unlike a
    DistributedSampler's padding to a multiple of N. A DistributedSampler, so that Lightning keeps it under DDP.
    It yields `(epoch, indices)`: the epoch seeds the per-sample transforms.
    """

    def __init__(
        self, size: int, batch_size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        if size < num_replicas:
            raise UserError(f"a split of {size} rows cannot give each of {num_replicas} processes a row.")
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.size, self.batch_size = size, batch_size

    def steps(self) -> list[tuple[int, int]]:
        """(start, stop) of each step in the epoch's order."""
        step = self.num_replicas * self.batch_size
        bounds = [*range(0, self.size, step), self.size]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < self.num_replicas:
            del bounds[-2]
        return list(itertools.pairwise(bounds))

    def __len__(self) -> int:
        return len(self.steps())

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        # A generator: the order is drawn at the first batch, once Lightning (or at_current_epoch) set the epoch.
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        for start, stop in self.steps():
            yield self.epoch, order[start + self.rank : stop : self.num_replicas].tolist()


def column_array(column: Any, shape: Sequence[int]) -> np.ndarray:
    """An Arrow column of fixed-size lists (nested once per dimension) as one numpy array (rows, *shape), no copy
    of the values where Arrow allows it."""
    values = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    for _ in shape:
        values = values.flatten()
    array = values.to_numpy(zero_copy_only=False).reshape(len(column), *shape)
    return np.require(array, requirements="W")  # a view of Arrow's read-only memory is copied: tensors may be written


class PreparedRows(Dataset):
    """A split of a prepared dataset; `dataset[(epoch, indices)]` is one batch: `columns`' tensors in order, each
    sample passed through `transforms` first when there are any."""

    def __init__(
        self, split: Any, shapes: dict[str, list[int]], columns: Sequence[str], transforms: Pipeline, seed: int
    ) -> None:
        self.split = split.with_format("arrow")  # Arrow tables: no per-row Python objects
        self.shapes, self.columns, self.transforms, self.seed = shapes, list(columns), transforms, seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, list[int]]) -> list[Tensor]:
        epoch, indices = key
        table = self.split[indices]
        batch = {name: torch.from_numpy(column_array(table.column(name), shape)) for name, shape in self.shapes.items()}
        if self.transforms.batched:  # none, or each one as right on a batch as on a sample: once, not per sample
            batch = self.transforms.on_batch(batch)
            return [batch[name] for name in self.columns]
        samples = [
            self.transforms({name: value[i] for name, value in batch.items()}, self.seed, epoch, index)
            for i, index in enumerate(indices)
        ]
        return [torch.stack([sample[name] for sample in samples]) for name in self.columns]


def batch_as_is(batch: list[Tensor]) -> list[Tensor]:
    """`PreparedRows` already made the batch."""
    return batch


class PrepareIfMissing:
    """`data.prepare_if_missing`: the dataset to write at `path` on first use, the rows of `source` (a source config:
    `_target_` and arguments, as conf/source/ holds them; built only when written), the one writer of prepare.py
    doing the writing. A data module whose `path` is another dir never writes (a dir a user named holds their data).
    Configs give it `_recursive_: false`, so that Hydra leaves the source a config."""

    def __init__(self, path: str, source: Mapping[str, Any], max_shard_size: str = "500MB") -> None:
        self.path, self.max_shard_size = str(path), max_shard_size
        self.source = OmegaConf.to_container(source, resolve=True) if OmegaConf.is_config(source) else dict(source)

    def __call__(self, path: str) -> None:
        """Write the dataset at `path` if it is this one's dir and nothing is prepared there yet."""
        if same_dir(path, self.path):
            from hydralight.core.prepare import prepare_once

            prepare_once(self.source, self.path, self.max_shard_size)


class PreparedDataModule(LightningDataModule):
    """The train/val/test splits of a dataset prepared on disk (`python prepare.py`), memory-mapped.

    Batches are the tensors of `columns`, in that order (what the module's steps unpack: [image, label] for the
    classifier, [input, target] for a language model). `transforms` apply to every split (decoding, scaling), then
    `train_transforms` to training samples only (augmentation); both are lists of callables, see data/transforms.py.
    `keep_in_memory=true` reads the whole dataset into RAM instead (the benchmark compares the two).
    `prepare_if_missing` (a PrepareIfMissing) writes the dataset on first use: Lightning calls `prepare_data` once
    per node (local rank 0) before any process reads.
    """

    def __init__(
        self,
        path: str,
        columns: Sequence[str],
        batch_size: int = 64,
        shuffle: bool = True,
        transforms: Sequence[Transform] = (),
        train_transforms: Sequence[Transform] = (),
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        prefetch_factor: int | None = 2,
        keep_in_memory: bool = False,
        prepare_if_missing: PrepareIfMissing | None = None,
    ) -> None:
        super().__init__()
        self.path = str(path)
        self.columns = list(columns)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.transforms = list(transforms)
        self.train_transforms = list(train_transforms)
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None
        self.keep_in_memory = keep_in_memory
        self.prepare_if_missing = prepare_if_missing
        self.splits: dict[str, Any] = {}
        self.shapes: dict[str, list[int]] = {}

    def prepare_data(self) -> None:
        if self.prepare_if_missing is not None:
            self.prepare_if_missing(self.path)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        load_from_disk = require_datasets("data=ondisk reads").load_from_disk  # the ondisk extra

        description = read_prepared(self.path)
        self.shapes = {name: column["shape"] for name, column in description["columns"].items()}
        self.splits = dict(load_from_disk(self.path, keep_in_memory=self.keep_in_memory))
        if self.batch_size > len(self.splits["train"]):
            raise UserError(
                f"data.batch_size={self.batch_size} is larger than the training split of {self.path} "
                f"({len(self.splits['train'])} rows). Use data.batch_size <= {len(self.splits['train'])}."
            )
        self._check_columns()

    def _check_columns(self) -> None:
        """Every name in `columns` is in the first training sample once transformed: a wrong name is one line
        here, not a KeyError in a loader worker."""
        rows = PreparedRows(self.splits["train"], self.shapes, list(self.shapes), Pipeline([]), 0)
        sample = dict(zip(self.shapes, (column[0] for column in rows[(0, [0])]), strict=True))
        produced = Pipeline(self.transforms + self.train_transforms)(sample, seed=0, epoch=0, index=0)
        missing = [name for name in self.columns if name not in produced]
        if missing:
            raise UserError(
                f"data.columns={self.columns} names {missing}: neither {self.path} nor its transforms make it. "
                f"The transformed samples have: {sorted(produced)}"
            )

    def _loader(self, name: str, shuffle: bool, transforms: list[Transform]) -> StatefulDataLoader:
        shards, rank = data_shard(self.trainer)
        rows = PreparedRows(self.splits[name], self.shapes, self.columns, Pipeline(transforms), run_seed())
        sampler = ShardedBatches(len(rows), self.batch_size, shards, rank, shuffle=shuffle, seed=run_seed())
        # batch_size=None: the sampler's items are whole batches, read from Arrow in one call each.
        return StatefulDataLoader(
            rows,
            batch_size=None,
            sampler=at_current_epoch(sampler, self.trainer) if name == "train" else sampler,
            collate_fn=batch_as_is,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
            generator=loader_generator(),  # its workers' seeds drawn from its own generator, not the global one
        )

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", self.shuffle, self.transforms + self.train_transforms)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("val", False, self.transforms)

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", False, self.transforms)

    def predict_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", False, self.transforms)
