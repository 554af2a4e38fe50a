"""What the in-memory datamodules share: split by a fixed seed, serve tensors through DataLoaders, say which shard of
the data this process reads (`data_shard`, which every data module and the throughput callback ask), and read a file
of raw samples for predict the way the training data are read (`predict_input`, imported by predict only)."""

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import ConcatDataset, Dataset, DistributedSampler, Subset, TensorDataset
from torchdata.stateful_dataloader import StatefulDataLoader

from hydralight.compat.lightning import loader_states_to_load
from hydralight.core.errors import UserError

if TYPE_CHECKING:
    from lightning.pytorch import Trainer


def run_seed() -> int:
    """The run's `seed` (seed_everything puts it in PL_GLOBAL_SEED, where Lightning's DistributedSampler reads it)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def data_shard(trainer: "Trainer | None") -> tuple[int, int]:
    """(number of data shards, this process's shard): one per data-parallel process, as Lightning's own sampler
    shards (`distributed_sampler_kwargs`). The processes of a tensor-parallel group share one shard."""
    if trainer is None or trainer.world_size == 1:
        return 1, 0
    kwargs = trainer.distributed_sampler_kwargs or {}
    return kwargs.get("num_replicas", trainer.world_size), kwargs.get("rank", trainer.global_rank)


def loader_generator() -> torch.Generator:
    """A loader's own generator, seeded by the run's seed: the seeds it gives its workers then do not depend on what
    drew from the global generator before (dropout, another loader), and drawing them leaves the global one alone."""
    return torch.Generator().manual_seed(run_seed())


def at_current_epoch(sampler: DistributedSampler, trainer: "Trainer | None") -> DistributedSampler:
    """`sampler` set to the epoch its loader is built for. Lightning sets it at each epoch's start, but a resumed run
    builds the loader's iterator before that (and fast-forwards it to the saved position), and the stateful loaders
    draw their order when it is built: without this, in epoch 0's order, not the resumed epoch's."""
    if trainer is not None:
        progress = trainer.fit_loop.epoch_progress.current
        # A saved position to restore: resumed inside the epoch in progress. None (a fresh run, or a checkpoint of
        # an epoch's end, which keeps none: ResumeState): the next epoch, the one started next.
        resuming_inside = bool(loader_states_to_load(trainer.fit_loop))
        sampler.set_epoch(progress.processed if resuming_inside else progress.started)
    return sampler


def split_indices(n: int, sizes: Sequence[int], seed: int) -> list[torch.Tensor]:
    """A random permutation of range(n) cut into consecutive parts of the given sizes (last part: the rest)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    bounds.append(n)
    return [order[start:stop] for start, stop in itertools.pairwise(bounds)]


def check_folds(num_folds: int | None, fold: int) -> None:
    """k-fold arguments: K >= 2 folds (or null: no cross-validation) and a fold 0..K-1."""
    if num_folds is None:
        if fold != 0:
            raise ValueError(f"fold={fold!r} needs num_folds=K (K >= 2): set both, e.g. num_folds=5 fold={fold!r}")
        return
    if isinstance(num_folds, bool) or not isinstance(num_folds, int) or num_folds < 2:
        raise ValueError(f"num_folds must be a whole number >= 2 (or null: no cross-validation), got {num_folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < num_folds:
        raise ValueError(f"fold must be one of 0..{num_folds - 1} (num_folds={num_folds}), got {fold!r}")


def _joined(first: Dataset, second: Dataset) -> Dataset:
    if type(first) is TensorDataset and type(second) is TensorDataset:
        return TensorDataset(*(torch.cat(pair) for pair in zip(first.tensors, second.tensors, strict=True)))
    return ConcatDataset([first, second])


def _subset(dataset: Dataset, indices: torch.Tensor) -> Dataset:
    if type(dataset) is TensorDataset:  # stays a TensorDataset: the loaders' fast path still applies
        return TensorDataset(*(tensor[indices] for tensor in dataset.tensors))
    return Subset(dataset, indices.tolist())


def fold_splits(train: Dataset, val: Dataset, num_folds: int, fold: int, seed: int) -> dict[str, Dataset]:
    """k-fold cross-validation over the training and validation samples together (the test split is never part of a
    fold): a permutation by `seed` cut into `num_folds` parts (sizes differ by at most one); part `fold` validates,
    the others train. The same seed gives the same folds in every run, so the K runs of a sweep cover every sample."""
    pool = _joined(train, val)
    parts = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tensor_split(num_folds)
    rest = torch.cat([part for index, part in enumerate(parts) if index != fold])
    return {"train": _subset(pool, rest), "val": _subset(pool, parts[fold])}


class BatchedTensorDataset(TensorDataset):
    """A TensorDataset that hands the DataLoader a whole batch at once: one indexing operation per tensor.

    The DataLoader calls `__getitems__` with each batch of indices its sampler drew (random, sequential or
    distributed alike) instead of `__getitem__` once per sample and a `torch.stack`: the same batches, in the same
    order, as `[images, labels]` like the default collate makes, for ~1/6 of the time (benchmarks/README.md).
    """

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return [tensor[index] for tensor in self.tensors]


def collate_batch(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    """The collate function for BatchedTensorDataset: the batch is already made."""
    return batch


class InMemoryDataModule(LightningDataModule):
    """Train/val/test TensorDatasets built once in `setup`; subclasses implement `load_splits`, and `transform` when
    the dataset's files hold raw values (pixels 0..16, 0..255) that training turns into model inputs.

    `predict_path`: a file of raw samples (.pt, .npy or .csv; one sample per row or per leading index, an optional
    last column of labels) that `predict_dataloader` serves instead of the test split, transformed like the training
    data. predict.py's `input=<file>` sets it.

    `num_folds=K fold=k`: k-fold cross-validation (`fold_splits`): the train and val splits pooled and cut into K
    folds fixed by `split_seed`; fold k validates, the rest trains; the test split is left as it is.
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        split_seed: int = 0,
        shuffle: bool = True,
        input_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        predict_path: str | None = None,
        num_folds: int | None = None,
        fold: int = 0,
    ) -> None:
        check_folds(num_folds, fold)
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.split_seed = split_seed
        self.shuffle = shuffle
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.predict_path = predict_path
        self.num_folds = num_folds
        self.fold = fold
        self.splits: dict[str, Dataset] = {}

    def load_splits(self) -> dict[str, TensorDataset]:
        """Return {"train": ..., "val": ..., "test": ...} as TensorDatasets of (image, label)."""
        raise NotImplementedError

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw samples (N, *input_shape), as the dataset's files hold them, as model inputs. The same function must
        serve `load_splits` and predict files: here they are used as they are."""
        return raw

    def load_predict_file(self, path: str | Path) -> TensorDataset:
        """The samples of `path` (and their labels, from a last extra column), checked and transformed."""
        from hydralight.data.predict_input import read_predict_file  # predict's input=<file> only

        return read_predict_file(path, self.input_shape, self.num_classes, self.transform, type(self).__name__)

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_path is not None:
            if "predict" not in self.splits:  # the file alone: no need for the dataset's own files
                self.splits["predict"] = self.load_predict_file(self.predict_path)
            return
        if "train" in self.splits:
            return
        self.splits.update(self.load_splits())
        if self.num_folds is not None:
            folds = fold_splits(self.splits["train"], self.splits["val"], self.num_folds, self.fold, self.split_seed)
            self.splits.update(folds)
        for name, split in self.splits.items():
            if name != "predict" and len(split) == 0:
                raise UserError(f"the {name} split of {type(self).__name__} is empty: check the split sizes.")
        if self.batch_size > len(self.splits["train"]):
            raise UserError(
                f"data.batch_size={self.batch_size} is larger than the training split "
                f"({len(self.splits['train'])} samples). Use data.batch_size <= {len(self.splits['train'])}."
            )

    def _loader(self, name: str, shuffle: bool) -> StatefulDataLoader:
        dataset = self.splits[name]
        shards, rank = data_shard(self.trainer)
        if name == "train":
            # The order is a function of the seed and the epoch alone (one shard per data-parallel process): the
            # same with any number of loader workers, and a resumed epoch redraws exactly the order it resumes.
            # Explicit under DDP too: Lightning keeps a DistributedSampler it is given, and with shuffle=false
            # N ranks at batch B see exactly the batches one process sees at batch N x B.
            sampler = DistributedSampler(dataset, num_replicas=shards, rank=rank, shuffle=shuffle, seed=run_seed())
            sampler = at_current_epoch(sampler, self.trainer)
        elif shards > 1:
            # Lightning's DistributedSampler pads the split to a multiple of the world size, counting some samples
            # twice; unpadded shards make N processes report exactly one process's accuracy.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=shards, rank=rank, shuffle=False)
        else:
            sampler = None
        fast = type(dataset) is TensorDataset  # a subclass may index differently: leave it to the default path
        # A last training batch of one sample is dropped: it fails in BatchNorm ("more than 1 value per channel") and
        # is one noisy step anyway. Only then: every other size keeps each sample.
        per_shard = -(-len(dataset) // shards)  # DistributedSampler's share, padded
        drop_last = name == "train" and self.batch_size > 1 and per_shard % self.batch_size == 1
        # Stateful: Lightning saves its position and shuffle order in every checkpoint, so a run resumed mid-epoch
        # sees exactly the batches it would have seen uninterrupted.
        return StatefulDataLoader(
            BatchedTensorDataset(*dataset.tensors) if fast else dataset,
            batch_size=self.batch_size,
            collate_fn=collate_batch if fast else None,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            generator=loader_generator(),
        )

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", shuffle=self.shuffle)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> StatefulDataLoader:
        return self._loader("test" if self.predict_path is None else "predict", shuffle=False)
