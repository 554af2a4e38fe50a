"""The datamodules: the embedded digits (splits, loaders) and MNIST read from IDX files written by the tests."""

import gzip
import json
import struct
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import SequentialSampler, TensorDataset

from hydralight.core.errors import UserError
from hydralight.core.train import train
from my_project.data.digits import DigitsDataModule, load_digits
from my_project.data.mnist import IDX_FILES, MNISTDataModule

DIGITS_TOTAL = 1797
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
N_TRAIN, N_TEST, VAL_SIZE = 120, 30, 20
ALL_IDX_NAMES = [name for pair in IDX_FILES.values() for name in pair]


# ---------------------------------------------------------------- digits


def digits(**kwargs) -> DigitsDataModule:
    datamodule = DigitsDataModule(**kwargs)
    datamodule.setup("fit")
    return datamodule


def tensors(datamodule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return datamodule.splits[split].tensors


def rows(images: torch.Tensor) -> list[bytes]:
    return [row.numpy().tobytes() for row in images.reshape(len(images), -1)]


def row_set(images: torch.Tensor) -> set[bytes]:
    return set(rows(images))


def test_digits_splits_cover_all_samples_without_overlap():
    """train/val/test hold all 1,797 digits once each: no image of one split appears in another."""
    datamodule = digits()
    sizes = {split: len(datamodule.splits[split]) for split in ("train", "val", "test")}
    assert sum(sizes.values()) == DIGITS_TOTAL
    assert sizes == {"train": 1258, "val": 180, "test": 359}  # test_fraction=0.2, val_fraction=0.1
    # The 1,797 images are pairwise distinct, so comparing the image tensors tracks the samples themselves.
    reference, reference_labels = load_digits()
    assert len(row_set(reference)) == DIGITS_TOTAL
    train, val, test = (row_set(tensors(datamodule, split)[0]) for split in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert train | val | test == row_set(reference)
    label_of = dict(zip(rows(reference), reference_labels.tolist(), strict=True))
    for split in ("train", "val", "test"):  # every image keeps its own label
        images, labels = tensors(datamodule, split)
        assert [label_of[row] for row in rows(images)] == labels.tolist()


def test_digits_split_indices_are_disjoint_and_complete():
    """The index split itself is a partition of range(1797)."""
    from hydralight.data.base import split_indices

    parts = split_indices(DIGITS_TOTAL, [359, 180], seed=0)
    assert [len(part) for part in parts] == [359, 180, 1258]
    assert sorted(torch.cat(parts).tolist()) == list(range(DIGITS_TOTAL))


def test_digits_shapes_range_and_classes():
    """Images are float (N,1,8,8) in [0,1], labels int64 in 0..9, and every class occurs in train."""
    datamodule = digits()
    for split in ("train", "val", "test"):
        images, labels = tensors(datamodule, split)
        assert images.dtype == torch.float32 and images.shape[1:] == (1, 8, 8)
        assert images.min() >= 0 and images.max() <= 1
        assert labels.dtype == torch.int64 and labels.shape == (len(images),)
        assert labels.min() >= 0 and labels.max() <= 9
    images, labels = tensors(datamodule, "train")
    assert images.max() == 1.0  # scaled by the pixel maximum, not left in 0..16
    assert set(labels.tolist()) == set(range(10))


def test_digits_split_is_fixed_by_split_seed():
    """Two datamodules with the same split_seed give identical splits; another split_seed gives another split."""
    first, second, other = digits(split_seed=0), digits(split_seed=0), digits(split_seed=1)
    for split in ("train", "val", "test"):
        assert torch.equal(tensors(first, split)[0], tensors(second, split)[0])
        assert torch.equal(tensors(first, split)[1], tensors(second, split)[1])
    assert not torch.equal(tensors(first, "test")[0], tensors(other, "test")[0])


def test_k_folds_partition_train_and_val_and_leave_the_test_split_alone():
    """num_folds=5: the five validation folds are disjoint, of sizes within one, and together are exactly the
    train + val samples of the plain split; each fold trains on the rest; the test split is the plain one; the same
    split_seed gives the same folds."""
    plain = digits()
    pool = row_set(tensors(plain, "train")[0]) | row_set(tensors(plain, "val")[0])
    folds = [digits(num_folds=5, fold=k) for k in range(5)]
    held = [row_set(tensors(fold, "val")[0]) for fold in folds]
    assert sorted(len(part) for part in held) == [287, 287, 288, 288, 288]
    assert set().union(*held) == pool and sum(map(len, held)) == len(pool)
    for fold, val in zip(folds, held, strict=True):
        train = row_set(tensors(fold, "train")[0])
        assert train == pool - val
        assert torch.equal(tensors(fold, "test")[0], tensors(plain, "test")[0])
        assert type(fold.splits["train"]) is TensorDataset  # the loaders' fast path still applies
    assert torch.equal(tensors(digits(num_folds=5, fold=3), "val")[0], tensors(folds[3], "val")[0])
    assert row_set(tensors(digits(num_folds=5, fold=3, split_seed=1), "val")[0]) != held[3]


def test_digits_test_split_does_not_depend_on_training_seed(make_cfg):
    """`seed=1` and `seed=2` (seed_everything included) see the same test split: only split_seed decides it."""
    test_sets = []
    for seed in (1, 2):
        cfg = make_cfg(f"seed={seed}")
        pl.seed_everything(cfg.seed)
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.setup("test")
        test_sets.append(tensors(datamodule, "test"))
    assert torch.equal(test_sets[0][0], test_sets[1][0])
    assert torch.equal(test_sets[0][1], test_sets[1][1])


def test_loader_settings_reach_the_dataloader(make_cfg):
    """data.batch_size / num_workers / pin_memory / persistent_workers from the config are the DataLoader's."""
    cfg = make_cfg("data.batch_size=32", "data.num_workers=2", "data.pin_memory=true", "data.persistent_workers=true")
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
    cfg = make_cfg("data.batch_size=16", "data.num_workers=2", "data.persistent_workers=true")
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers
    images, labels = next(iter(loader))
    assert images.shape == (16, 1, 8, 8) and labels.shape == (16,)
    workers = loader._iterator  # the persistent iterator, kept by the DataLoader
    assert workers is not None
    next(iter(loader))  # a second epoch reuses the same worker processes
    assert loader._iterator is workers
    workers._shutdown_workers()


def test_persistent_workers_without_workers_is_dropped():
    """persistent_workers=true with num_workers=0 is ignored instead of failing in the DataLoader."""
    datamodule = digits(num_workers=0, persistent_workers=True)
    loader = datamodule.train_dataloader()
    assert loader.persistent_workers is False
    assert len(next(iter(loader))[0]) == 64


def first_epoch_labels(loader) -> torch.Tensor:
    return torch.cat([labels for _, labels in loader])


def test_shuffle_false_gives_a_fixed_train_order(make_cfg):
    """data.shuffle=false: the train loader is sequential, the same order every epoch and in dataset order."""
    cfg = make_cfg("data.shuffle=false")
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    torch.manual_seed(0)
    first = first_epoch_labels(loader)
    torch.manual_seed(1)
    assert torch.equal(first, first_epoch_labels(loader))
    assert torch.equal(first, tensors(datamodule, "train")[1])


def epoch_labels(seed: int, epoch: int, num_workers: int = 0) -> torch.Tensor:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PL_GLOBAL_SEED", str(seed))
        loader = digits(shuffle=True, num_workers=num_workers).train_dataloader()
    loader.sampler.set_epoch(epoch)  # what Lightning does at each epoch's start
    return first_epoch_labels(loader)


def test_the_shuffle_order_is_a_function_of_the_seed_and_the_epoch_alone():
    """The same seed and epoch give the same order, with or without loader workers and whatever the global RNG
    holds (so a resumed epoch redraws exactly its order); another epoch or another seed gives another order."""
    torch.manual_seed(0)
    order = epoch_labels(seed=0, epoch=1)
    torch.manual_seed(1)
    assert torch.equal(order, epoch_labels(seed=0, epoch=1, num_workers=2))
    assert not torch.equal(order, epoch_labels(seed=0, epoch=2))
    assert not torch.equal(order, epoch_labels(seed=1, epoch=1))


# ---------------------------------------------------------------- mnist (IDX files written here)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """The standard IDX encoding: big-endian magic (0x0000 0x08 ndim), one uint32 per dimension, the bytes."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def fake_mnist(n: int, offset: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n random 28x28 uint8 images whose first two pixels encode their index (offset + i), and labels 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    images[:, 0, 0], images[:, 0, 1] = ids % 256, ids // 256
    labels = (ids * 7 % 10).astype(np.uint8)
    return images, labels


TRAIN_IMAGES, TRAIN_LABELS = fake_mnist(N_TRAIN, 0, seed=0)
TEST_IMAGES, TEST_LABELS = fake_mnist(N_TEST, N_TRAIN, seed=1)


def write_mnist(folder: Path, gz: bool = False, skip: tuple[str, ...] = ()) -> None:
    """The four IDX files (train: 120 images, test: 30) into `folder`, plain or gzip-compressed."""
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        "train-images-idx3-ubyte": idx_bytes(TRAIN_IMAGES, IMAGES_MAGIC),
        "train-labels-idx1-ubyte": idx_bytes(TRAIN_LABELS, LABELS_MAGIC),
        "t10k-images-idx3-ubyte": idx_bytes(TEST_IMAGES, IMAGES_MAGIC),
        "t10k-labels-idx1-ubyte": idx_bytes(TEST_LABELS, LABELS_MAGIC),
    }
    for name, data in contents.items():
        if name in skip:
            continue
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def mnist(data_dir: Path, **kwargs) -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(data_dir), val_size=VAL_SIZE, batch_size=16, **kwargs)


def ids_of(images: torch.Tensor) -> list[int]:
    pixels = (images[:, 0, 0, :2] * 255).round().long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("subdir", ["", "MNIST/raw"], ids=["data_dir", "MNIST-raw"])
def test_mnist_reads_idx_files(tmp_path, gz, subdir):
    """Plain or .gz IDX files in data_dir or data_dir/MNIST/raw load scaled to [0,1] with their labels."""
    write_mnist(tmp_path / subdir, gz=gz)
    datamodule = mnist(tmp_path)
    datamodule.prepare_data()  # files present: nothing to do, and no download
    datamodule.setup("fit")
    sizes = {split: len(datamodule.splits[split]) for split in ("train", "val", "test")}
    assert sizes == {"train": N_TRAIN - VAL_SIZE, "val": VAL_SIZE, "test": N_TEST}

    train_ids = []
    for split in ("train", "val"):
        images, labels = tensors(datamodule, split)
        assert images.dtype == torch.float32 and images.shape[1:] == (1, 28, 28)
        assert images.min() >= 0 and images.max() <= 1
        ids = ids_of(images)
        expected = torch.from_numpy(TRAIN_IMAGES[ids].astype(np.float32) / 255.0).unsqueeze(1)
        assert torch.equal(images, expected)
        assert labels.dtype == torch.int64 and labels.tolist() == TRAIN_LABELS[ids].tolist()
        train_ids += ids
    assert sorted(train_ids) == list(range(N_TRAIN))  # train and val partition the training file

    images, labels = tensors(datamodule, "test")  # the test file, whole and in its own order
    assert torch.equal(images, torch.from_numpy(TEST_IMAGES.astype(np.float32) / 255.0).unsqueeze(1))
    assert labels.tolist() == TEST_LABELS.tolist()


def test_mnist_val_split_is_fixed_by_split_seed(tmp_path):
    """The validation images depend on split_seed only."""
    write_mnist(tmp_path)
    val_ids = []
    for split_seed in (0, 0, 1):
        datamodule = mnist(tmp_path, split_seed=split_seed)
        datamodule.setup("fit")
        val_ids.append(ids_of(tensors(datamodule, "val")[0]))
    assert val_ids[0] == val_ids[1] != val_ids[2]


@pytest.mark.parametrize("present", [(), ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")])
def test_mnist_missing_files_is_a_user_error(tmp_path, present):
    """Missing IDX files: a UserError naming data.data_dir, the path, the missing files and data.download."""
    data_dir = tmp_path / "nowhere"
    write_mnist(data_dir, skip=tuple(name for name in ALL_IDX_NAMES if name not in present))
    missing = [name for name in ALL_IDX_NAMES if name not in present]
    for step in ("prepare_data", "setup"):
        datamodule = mnist(data_dir)
        with pytest.raises(UserError) as error:
            datamodule.prepare_data() if step == "prepare_data" else datamodule.setup("fit")
        message = str(error.value)
        assert "data.data_dir" in message and str(data_dir) in message
        assert "data.download" in message
        assert all(name in message for name in missing)
        assert not any(name in message for name in present)


@pytest.fixture
def no_torchvision(monkeypatch):
    """Make `import torchvision` fail as if it were not installed (it is not here, but be sure)."""
    for name in [module for module in sys.modules if module.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` now raises ImportError


def test_mnist_download_without_torchvision_is_a_user_error(tmp_path, no_torchvision):
    """data.download=true without torchvision: a UserError saying torchvision is needed; nothing is fetched."""
    datamodule = mnist(tmp_path / "empty", download=True)
    with pytest.raises(UserError, match="torchvision") as error:
        datamodule.prepare_data()
    assert "data.download" in str(error.value)
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").rglob("*"))


def test_mnist_download_is_not_attempted_when_files_exist(tmp_path, no_torchvision):
    """download=true with the files present neither imports torchvision nor fails."""
    write_mnist(tmp_path)
    datamodule = mnist(tmp_path, download=True)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert len(datamodule.splits["test"]) == N_TEST


def corrupt(tmp_path: Path, name: str, data: bytes, gz: bool = False) -> MNISTDataModule:
    """A full set of files in tmp_path whose `name` holds `data` instead."""
    write_mnist(tmp_path, gz=gz)
    path = tmp_path / (f"{name}.gz" if gz else name)
    path.write_bytes(data)
    return mnist(tmp_path)


def good_images() -> bytes:
    return idx_bytes(TRAIN_IMAGES, IMAGES_MAGIC)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("train-images-idx3-ubyte", good_images()[:-100]),  # the body cut short
        ("train-images-idx3-ubyte", b"\x00\x00\x0c\x03" + good_images()[4:]),  # int32 elements, not ubyte
        ("train-images-idx3-ubyte", b"\x12\x34\x08\x03" + good_images()[4:]),  # not starting with 0x0000
        ("train-labels-idx1-ubyte", idx_bytes(TRAIN_LABELS[:-5], LABELS_MAGIC)),  # 115 labels for 120 images
    ],
    ids=["truncated-body", "wrong-type-byte", "wrong-zero-bytes", "label-count"],
)
def test_mnist_corrupt_file_is_a_user_error(tmp_path, name, data):
    """A truncated IDX body, a header that is not 0x0000 0x08 .., or mismatched counts: a UserError naming it."""
    datamodule = corrupt(tmp_path, name, data)
    with pytest.raises(UserError, match=name):
        datamodule.setup("fit")


def test_mnist_truncated_gz_body_is_a_user_error(tmp_path):
    """A complete gzip stream whose IDX body is short: a UserError."""
    datamodule = corrupt(tmp_path, "t10k-images-idx3-ubyte", gzip.compress(good_images()[:-1]), gz=True)
    with pytest.raises(UserError, match="truncated"):
        datamodule.setup("fit")


@pytest.mark.parametrize("length", [0, 2, 10], ids=["empty", "short-magic", "short-dims"])
def test_mnist_truncated_header_is_a_user_error(tmp_path, length):
    """A file cut inside its IDX header: a UserError, not a struct.error traceback."""
    datamodule = corrupt(tmp_path, "train-images-idx3-ubyte", good_images()[:length])
    with pytest.raises(UserError, match="train-images-idx3-ubyte"):
        datamodule.setup("fit")


@pytest.mark.parametrize("kind", ["cut-stream", "not-gzip"])
def test_mnist_broken_gz_is_a_user_error(tmp_path, kind):
    """A .gz file cut mid-stream (an interrupted download) or not gzip at all: a UserError naming the file."""
    compressed = gzip.compress(good_images())
    data = compressed[: len(compressed) // 2] if kind == "cut-stream" else good_images()
    datamodule = corrupt(tmp_path, "train-images-idx3-ubyte", data, gz=True)
    with pytest.raises(UserError, match="train-images-idx3-ubyte"):
        datamodule.setup("fit")


def test_mnist_images_file_with_labels_magic_is_a_user_error(tmp_path):
    """An images file with magic 0x00000801 (1-D, a labels file) is rejected when read."""
    datamodule = corrupt(tmp_path, "train-images-idx3-ubyte", idx_bytes(TRAIN_LABELS, LABELS_MAGIC))
    with pytest.raises(UserError, match="train-images-idx3-ubyte"):
        datamodule.setup("fit")


def test_mnist_train_end_to_end(make_cfg, tmp_path):
    """train(cfg) with data=mnist on tiny IDX files fits, tests and writes metrics.json."""
    data_dir = tmp_path / "mnist"
    write_mnist(data_dir / "MNIST" / "raw", gz=True)
    cfg = make_cfg("data=mnist", f"data.data_dir={data_dir}", f"data.val_size={VAL_SIZE}", "data.batch_size=16")
    assert cfg.model.net.input_shape == [1, 28, 28]
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert {"val/acc_best", "test/acc", "test/loss"} <= metrics.keys()
    assert 0.0 <= metrics["test/acc"] <= 1.0
