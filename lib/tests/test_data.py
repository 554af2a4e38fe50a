"""The in-memory data modules (hydralight.data.InMemoryDataModule): splits fixed by their own seed, k folds, the
loaders' settings and workers, and a training order that is a function of the seed and the epoch alone. On
hydralight.testing's ImageData (data=images), an InMemoryDataModule of random images, never an example's data."""

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import SequentialSampler, TensorDataset

from hydralight.data.base import split_indices
from hydralight.testing.images import ImageData

IMAGES = ("data=images", "model=image_classifier")


def images(**kwargs) -> ImageData:
    datamodule = ImageData(**kwargs)
    datamodule.setup("fit")
    return datamodule


def tensors(datamodule: ImageData, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return datamodule.splits[split].tensors


def row_set(samples: torch.Tensor) -> set[bytes]:
    """The samples as a set of their bytes: the random images are pairwise distinct, so this tracks the samples."""
    return {row.numpy().tobytes() for row in samples.reshape(len(samples), -1)}


def test_split_indices_are_disjoint_and_complete():
    """The index split is a partition of range(n), in parts of the sizes asked for and the rest."""
    parts = split_indices(1797, [359, 180], seed=0)
    assert [len(part) for part in parts] == [359, 180, 1258]
    assert sorted(torch.cat(parts).tolist()) == list(range(1797))


def test_a_split_depends_on_its_own_seed_alone():
    """The same split seed gives the same split whatever the global generator holds; another seed, another split."""
    torch.manual_seed(0)
    first = split_indices(100, [20, 10], seed=0)
    torch.manual_seed(1)
    torch.rand(3)
    assert all(torch.equal(a, b) for a, b in zip(first, split_indices(100, [20, 10], seed=0), strict=True))
    assert not torch.equal(first[0], split_indices(100, [20, 10], seed=1)[0])


def test_the_test_split_does_not_depend_on_the_training_seed(make_cfg):
    """`seed=1` and `seed=2` (seed_everything included) see the same test split: only data.split_seed decides it."""
    test_sets = []
    for seed in (1, 2):
        cfg = make_cfg(*IMAGES, f"seed={seed}")
        pl.seed_everything(cfg.seed)
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.setup("test")
        test_sets.append(tensors(datamodule, "test"))
    assert torch.equal(test_sets[0][0], test_sets[1][0])
    assert torch.equal(test_sets[0][1], test_sets[1][1])


def test_k_folds_partition_train_and_val_and_leave_the_test_split_alone():
    """num_folds=5: the five validation folds are disjoint, of sizes within one, and together are exactly the
    train + val samples of the plain split; each fold trains on the rest; the test split is the plain one; the same
    split_seed gives the same folds."""
    plain = images(n_samples=152)  # 122 train + val samples: folds of 24 and 25
    pool = row_set(tensors(plain, "train")[0]) | row_set(tensors(plain, "val")[0])
    assert len(pool) == 122
    folds = [images(n_samples=152, num_folds=5, fold=k) for k in range(5)]
    held = [row_set(tensors(fold, "val")[0]) for fold in folds]
    assert sorted(len(part) for part in held) == [24, 24, 24, 25, 25]
    assert set().union(*held) == pool and sum(map(len, held)) == len(pool)
    for fold, val in zip(folds, held, strict=True):
        train = row_set(tensors(fold, "train")[0])
        assert train == pool - val
        assert torch.equal(tensors(fold, "test")[0], tensors(plain, "test")[0])
        assert type(fold.splits["train"]) is TensorDataset  # the loaders' fast path still applies
    assert torch.equal(tensors(images(n_samples=152, num_folds=5, fold=3), "val")[0], tensors(folds[3], "val")[0])
    assert row_set(tensors(images(n_samples=152, num_folds=5, fold=3, split_seed=1), "val")[0]) != held[3]


def test_loader_settings_reach_the_dataloader(make_cfg):
    """data.batch_size / num_workers / pin_memory / persistent_workers from the config are the DataLoader's."""
    cfg = make_cfg(*IMAGES, "data.batch_size=32", "data.num_workers=2", "data.pin_memory=true",
                   "data.persistent_workers=true")  # fmt: skip
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader(), datamodule.test_dataloader()):
        assert loader.batch_size == 32
        assert loader.num_workers == 2
        assert loader.pin_memory is True
        assert loader.persistent_workers is True
    assert isinstance(datamodule.val_dataloader().sampler, SequentialSampler)


def test_persistent_workers_loader_yields_batches(make_cfg):
    """num_workers=2 persistent_workers=true gives a working loader whose workers survive between epochs."""
    cfg = make_cfg(*IMAGES, "data.batch_size=16", "data.num_workers=2", "data.persistent_workers=true")
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers
    samples, labels = next(iter(loader))
    assert samples.shape == (16, 1, 8, 8) and labels.shape == (16,)
    workers = loader._iterator  # the persistent iterator, kept by the DataLoader
    assert workers is not None
    next(iter(loader))  # a second epoch reuses the same worker processes
    assert loader._iterator is workers
    workers._shutdown_workers()


def test_persistent_workers_without_workers_is_dropped():
    """persistent_workers=true with num_workers=0 is ignored instead of failing in the DataLoader."""
    loader = images(num_workers=0, persistent_workers=True).train_dataloader()
    assert loader.persistent_workers is False
    assert len(next(iter(loader))[0]) == 64


def first_epoch(loader) -> torch.Tensor:
    return torch.cat([samples for samples, _ in loader])


def test_shuffle_false_gives_a_fixed_train_order(make_cfg):
    """data.shuffle=false: the train loader is sequential, the same order every epoch and in dataset order."""
    cfg = make_cfg(*IMAGES, "data.shuffle=false")
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    torch.manual_seed(0)
    first = first_epoch(loader)
    torch.manual_seed(1)
    assert torch.equal(first, first_epoch(loader))
    assert torch.equal(first, tensors(datamodule, "train")[0])


def epoch_order(seed: int, epoch: int, num_workers: int = 0) -> torch.Tensor:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PL_GLOBAL_SEED", str(seed))
        loader = images(shuffle=True, num_workers=num_workers).train_dataloader()
    loader.sampler.set_epoch(epoch)  # what Lightning does at each epoch's start
    return first_epoch(loader)


def test_the_shuffle_order_is_a_function_of_the_seed_and_the_epoch_alone():
    """The same seed and epoch give the same order, with or without loader workers and whatever the global RNG
    holds (so a resumed epoch redraws exactly its order); another epoch or another seed gives another order."""
    torch.manual_seed(0)
    order = epoch_order(seed=0, epoch=1)
    torch.manual_seed(1)
    assert torch.equal(order, epoch_order(seed=0, epoch=1, num_workers=2))
    assert not torch.equal(order, epoch_order(seed=0, epoch=2))
    assert not torch.equal(order, epoch_order(seed=1, epoch=1))
