"""The digits example's own data code: the embedded digits (their split, in memory and as prepare.py writes them) and
MNIST read from IDX files written here. The machinery under them (InMemoryDataModule, PreparedDataModule,
prepare.py) is tested in lib/tests."""

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hydralight.core.errors import UserError
from my_project.data.digits import DigitsDataModule, load_digits
from my_project.data.mnist import IDX_FILES, MNISTDataModule
from tests.conftest import prepare_dataset

N_TRAIN, N_TEST, VAL_SIZE = 120, 30, 20
ALL_IDX_NAMES = [name for pair in IDX_FILES.values() for name in pair]


def rows(images: torch.Tensor) -> list[bytes]:
    return [row.numpy().tobytes() for row in images.reshape(len(images), -1)]


def test_digits_splits_cover_all_samples_once_with_their_labels():
    """train/val/test hold all 1,797 digits once each, float (N,1,8,8) in [0,1] with their own int64 label 0..9."""
    datamodule = DigitsDataModule()
    datamodule.setup("fit")
    assert {split: len(data) for split, data in datamodule.splits.items()} == {"train": 1258, "val": 180, "test": 359}
    reference, reference_labels = load_digits()
    label_of = dict(zip(rows(reference), reference_labels.tolist(), strict=True))
    assert len(label_of) == 1797  # the images are pairwise distinct: their bytes track the samples
    seen = []
    for split in ("train", "val", "test"):
        images, labels = datamodule.splits[split].tensors
        assert images.dtype == torch.float32 and images.shape[1:] == (1, 8, 8)
        assert images.min() >= 0 and images.max() <= 1 and labels.dtype == torch.int64
        assert [label_of[row] for row in rows(images)] == labels.tolist()
        seen += rows(images)
    assert sorted(seen) == sorted(label_of)
    assert datamodule.splits["train"].tensors[0].max() == 1.0  # scaled by the pixel maximum, not left in 0..16
    assert set(datamodule.splits["train"].tensors[1].tolist()) == set(range(10))


@pytest.fixture(scope="session")
def prepared_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded digits prepared on disk (`python prepare.py`), shared by the tests that only read it."""
    pytest.importorskip("datasets", reason="the ondisk extra: pip install -e '.[ondisk]'")
    return prepare_dataset(tmp_path_factory.mktemp("prepared") / "digits")


def test_prepared_digits_are_the_in_memory_digits_split_the_same_way(prepared_digits):
    """prepare.py's digits (source=digits) are DigitsDataModule's, row for row, in the same train/val/test split."""
    from hydralight.data.ondisk import PreparedDataModule
    from hydralight.data.transforms import ToUnit

    memory = DigitsDataModule()
    memory.setup("fit")
    disk = PreparedDataModule(str(prepared_digits), ["image", "label"], shuffle=False, transforms=[ToUnit("image", 16)],
                              num_workers=0)  # fmt: skip
    disk.setup("fit")
    for split, loader in (("train", disk.train_dataloader()), ("test", disk.test_dataloader())):
        images, labels = (torch.cat(column) for column in zip(*loader, strict=True))
        expected_images, expected_labels = memory.splits[split].tensors
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


# ---------------------------------------------------------------- mnist (IDX files written here)


def idx_bytes(array: np.ndarray) -> bytes:
    """The standard IDX encoding: big-endian magic (0x0000 0x08 ndim), one uint32 per dimension, the bytes."""
    return struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def fake_mnist(n: int, offset: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n random 28x28 uint8 images whose first two pixels encode their index (offset + i), and labels 0..9."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    images[:, 0, 0], images[:, 0, 1] = ids % 256, ids // 256
    return images, (ids * 7 % 10).astype(np.uint8)


TRAIN_IMAGES, TRAIN_LABELS = fake_mnist(N_TRAIN, 0, seed=0)
TEST_IMAGES, TEST_LABELS = fake_mnist(N_TEST, N_TRAIN, seed=1)
CONTENTS = dict(zip(ALL_IDX_NAMES, map(idx_bytes, (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)), strict=True))


def write_mnist(folder: Path, gz: bool = False, skip: tuple[str, ...] = ()) -> None:
    """The four IDX files (train: 120 images, test: 30) into `folder`, plain or gzip-compressed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in CONTENTS.items():
        if name not in skip:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data)) if gz else (folder / name).write_bytes(data)


def mnist(data_dir: Path, **kwargs) -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(data_dir), val_size=VAL_SIZE, batch_size=16, **kwargs)


def ids_of(images: torch.Tensor) -> list[int]:
    pixels = (images[:, 0, 0, :2] * 255).round().long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("subdir", ["", "MNIST/raw"], ids=["data_dir", "MNIST-raw"])
def test_mnist_reads_idx_files(tmp_path, gz, subdir):
    """Plain or .gz IDX files in data_dir or data_dir/MNIST/raw load scaled to [0,1] with their labels; train and val
    partition the training file by split_seed, the test file is whole and in its own order."""
    write_mnist(tmp_path / subdir, gz=gz)
    datamodule = mnist(tmp_path)
    datamodule.prepare_data()  # files present: nothing to do, and no download
    datamodule.setup("fit")
    train_ids = []
    for split in ("train", "val"):
        images, labels = datamodule.splits[split].tensors
        ids = ids_of(images)
        assert torch.equal(images, torch.from_numpy(TRAIN_IMAGES[ids].astype(np.float32) / 255.0).unsqueeze(1))
        assert labels.dtype == torch.int64 and labels.tolist() == TRAIN_LABELS[ids].tolist()
        train_ids += ids
    assert len(datamodule.splits["val"]) == VAL_SIZE and sorted(train_ids) == list(range(N_TRAIN))
    images, labels = datamodule.splits["test"].tensors
    assert torch.equal(images, torch.from_numpy(TEST_IMAGES.astype(np.float32) / 255.0).unsqueeze(1))
    assert labels.tolist() == TEST_LABELS.tolist()
    other = mnist(tmp_path, split_seed=1)
    other.setup("fit")
    assert ids_of(other.splits["val"].tensors[0]) != ids_of(datamodule.splits["val"].tensors[0])


def test_mnist_reads_raw_predict_files_as_its_idx_files(tmp_path):
    """MNIST predict rows are raw pixels 0..255 (with a 785th label column), scaled exactly like the IDX images."""
    write_mnist(tmp_path)
    datamodule = mnist(tmp_path)
    datamodule.setup("test")
    images, labels = datamodule.splits["test"].tensors
    raw = (images.reshape(len(images), -1) * 255).round()
    np.savetxt(tmp_path / "rows.csv", torch.cat([raw, labels[:, None].float()], dim=1).numpy(), delimiter=",", fmt="%d")
    reader = MNISTDataModule(data_dir=str(tmp_path / "absent"), predict_path=str(tmp_path / "rows.csv"))
    reader.setup("predict")  # the file alone: the IDX files of data_dir are not needed
    read_images, read_labels = reader.splits["predict"].tensors
    assert torch.equal(read_images, images) and torch.equal(read_labels, labels)


@pytest.mark.parametrize("present", [(), ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")])
def test_mnist_missing_files_is_a_user_error(tmp_path, present):
    """Missing IDX files: a UserError naming data.data_dir, the path, the missing files and data.download."""
    write_mnist(tmp_path, skip=tuple(name for name in ALL_IDX_NAMES if name not in present))
    for step in ("prepare_data", "setup"):
        datamodule = mnist(tmp_path)
        with pytest.raises(UserError) as error:
            datamodule.prepare_data() if step == "prepare_data" else datamodule.setup("fit")
        message = str(error.value)
        assert "data.data_dir" in message and str(tmp_path) in message and "data.download" in message
        assert all((name in message) != (name in present) for name in ALL_IDX_NAMES)


def test_mnist_downloads_only_what_is_missing_and_only_with_torchvision(tmp_path, monkeypatch):
    """download=true with the files present needs no torchvision; without the files and torchvision it is a
    UserError saying torchvision is needed, and nothing is fetched."""
    for name in [module for module in sys.modules if module.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` now raises ImportError
    write_mnist(tmp_path / "present")
    datamodule = mnist(tmp_path / "present", download=True)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert len(datamodule.splits["test"]) == N_TEST
    with pytest.raises(UserError, match=r"data\.download=true needs torchvision"):
        mnist(tmp_path / "empty", download=True).prepare_data()
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").rglob("*"))


IMAGES = CONTENTS["train-images-idx3-ubyte"]


@pytest.mark.parametrize(
    ("name", "data", "gz"),
    [
        ("train-images-idx3-ubyte", IMAGES[:-100], False),  # the body cut short
        ("train-images-idx3-ubyte", b"\x00\x00\x0c\x03" + IMAGES[4:], False),  # int32 elements, not ubyte
        ("train-images-idx3-ubyte", b"\x12\x34\x08\x03" + IMAGES[4:], False),  # not starting with 0x0000
        ("train-images-idx3-ubyte", CONTENTS["train-labels-idx1-ubyte"], False),  # a labels file (1-D)
        ("train-labels-idx1-ubyte", idx_bytes(TRAIN_LABELS[:-5]), False),  # 115 labels for 120 images
        *[("train-images-idx3-ubyte", IMAGES[:length], False) for length in (0, 2, 10)],  # cut inside the header
        ("t10k-images-idx3-ubyte", gzip.compress(IMAGES[:-1]), True),  # a complete gzip stream, its body short
        ("train-images-idx3-ubyte", gzip.compress(IMAGES)[:1000], True),  # cut mid-stream: an interrupted download
        ("train-images-idx3-ubyte", IMAGES, True),  # a .gz that is not gzip
    ],
)
def test_mnist_broken_file_is_a_user_error_naming_it(tmp_path, name, data, gz):
    """A truncated or cut IDX file, a header that is not 0x0000 0x08 <ndim>, mismatched counts or a broken .gz: a
    UserError naming the file, not a struct.error or gzip traceback."""
    write_mnist(tmp_path, gz=gz)
    (tmp_path / (f"{name}.gz" if gz else name)).write_bytes(data)
    with pytest.raises(UserError, match=name):
        mnist(tmp_path).setup("fit")
