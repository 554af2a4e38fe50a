"""What the in-memory datamodules share: split by a fixed seed, serve tensors through DataLoaders."""

import itertools
from collections.abc import Sequence

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from hydralight.errors import UserError


def split_indices(n: int, sizes: Sequence[int], seed: int) -> list[torch.Tensor]:
    """A random permutation of range(n) cut into consecutive parts of the given sizes (last part: the rest)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    bounds.append(n)
    return [order[start:stop] for start, stop in itertools.pairwise(bounds)]


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
    """Train/val/test TensorDatasets built once in `setup`; subclasses implement `load_splits`."""

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
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.split_seed = split_seed
        self.shuffle = shuffle
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.splits: dict[str, Dataset] = {}

    def load_splits(self) -> dict[str, TensorDataset]:
        """Return {"train": ..., "val": ..., "test": ...} as TensorDatasets of (image, label)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.splits = self.load_splits()
        for name, split in self.splits.items():
            if len(split) == 0:
                raise UserError(f"the {name} split of {type(self).__name__} is empty: check the split sizes.")
        if self.batch_size > len(self.splits["train"]):
            raise UserError(
                f"data.batch_size={self.batch_size} is larger than the training split "
                f"({len(self.splits['train'])} samples). Use data.batch_size <= {len(self.splits['train'])}."
            )

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        dataset, sampler = self.splits[name], None
        if self.trainer is not None and self.trainer.world_size > 1:
            shard = {"num_replicas": self.trainer.world_size, "rank": self.trainer.global_rank, "shuffle": False}
            if name != "train":
                # Lightning's DistributedSampler pads the split to a multiple of the world size, counting some
                # samples twice; unpadded shards make N processes report exactly one process's accuracy.
                sampler = UnrepeatedDistributedSampler(dataset, **shard)
            elif not shuffle:
                # Lightning would swap in a *shuffling* DistributedSampler; an explicit one keeps the order, so N
                # ranks at batch B see exactly the batches one process sees at batch N x B.
                sampler = DistributedSampler(dataset, **shard)
        fast = type(dataset) is TensorDataset  # a subclass may index differently: leave it to the default path
        return DataLoader(
            BatchedTensorDataset(*dataset.tensors) if fast else dataset,
            batch_size=self.batch_size,
            collate_fn=collate_batch if fast else None,
            shuffle=shuffle if sampler is None else None,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
