"""Data larger than memory: `python prepare.py` writes a dataset to disk, `data=ondisk` reads it with loader workers,
every row once per epoch on any number of processes, in an order fixed by the seed and the epoch."""

import itertools
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hydralight.core.errors import UserError
from tests.conftest import prepare_dataset

pytest.importorskip("datasets", reason="the ondisk extra: pip install -e '.[ondisk]'")

from hydralight.data.ondisk import PreparedDataModule, ShardedBatches
from hydralight.data.transforms import GaussianNoise, RandomShift, ToUnit

ONDISK = ("experiment=ondisk_images",)


def shards(size: int, batch_size: int, world: int, epoch: int = 0, shuffle: bool = True) -> list[list[list[int]]]:
    """The batches of each of `world` processes for one epoch."""
    ranks = []
    for rank in range(world):
        sampler = ShardedBatches(size, batch_size, world, rank, shuffle=shuffle, seed=3)
        sampler.set_epoch(epoch)
        ranks.append([indices for _, indices in sampler])
    return ranks


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [1, 5, 64, 129, 130, 257, 1000])
def test_each_row_is_read_once_per_epoch_on_any_number_of_processes(size, world):
    """No row twice and none left out (a DistributedSampler pads to a multiple of the process count), the same
    number of batches on every process (DDP waits for all), and no empty batch."""
    if size < world:
        with pytest.raises(UserError, match=f"a split of {size} rows cannot give each of {world} processes a row"):
            ShardedBatches(size, 64, world, 0)
        return
    ranks = shards(size, batch_size=64, world=world)
    rows = [index for batches in ranks for batch in batches for index in batch]
    assert sorted(rows) == list(range(size))
    assert len({len(batches) for batches in ranks}) == 1
    assert all(batch for batches in ranks for batch in batches)
    assert len(ShardedBatches(size, 64, world, 0)) == len(ranks[0])


def test_n_processes_read_together_what_one_process_reads_at_n_times_the_batch():
    """Step by step, 2 processes at batch 8 read the rows of 1 process at batch 16: a run's data does not change
    with the number of processes, only how it is split."""
    two = shards(100, batch_size=8, world=2)
    one = shards(100, batch_size=16, world=1)[0]
    assert [sorted(a + b) for a, b in zip(*two, strict=True)] == [sorted(batch) for batch in one]


def test_the_order_is_a_function_of_the_seed_and_the_epoch():
    assert shards(50, 8, 1, epoch=1) == shards(50, 8, 1, epoch=1) != shards(50, 8, 1, epoch=2)
    assert [i for batch in shards(50, 8, 1, shuffle=False)[0] for i in batch] == list(range(50))


def module(path: Path, **kwargs) -> PreparedDataModule:
    kwargs = {"columns": ["image", "label"], "transforms": [ToUnit("image", 16)], **kwargs}
    data = PreparedDataModule(str(path), **kwargs)
    data.setup("fit")
    return data


def epoch_batches(data: PreparedDataModule) -> list[list[torch.Tensor]]:
    return list(data.train_dataloader())


def test_workers_and_random_transforms_give_the_same_batches(prepared_digits):
    """Random augmentations draw from (seed, epoch, row): 0 and 2 workers give bitwise the same epoch."""
    augment = [RandomShift("image", 1), GaussianNoise("image", 0.1)]
    without = epoch_batches(module(prepared_digits, train_transforms=augment, num_workers=0))
    with_workers = epoch_batches(module(prepared_digits, train_transforms=augment, num_workers=2))
    assert len(without) == len(with_workers) == 20  # 1,258 training rows at 64
    for a, b in zip(without, with_workers, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    plain = epoch_batches(module(prepared_digits, num_workers=0))
    assert not torch.equal(plain[0][0], without[0][0])  # the augmentation did change the images
    assert torch.equal(plain[0][1], without[0][1])  # on the same rows


def test_keep_in_memory_reads_the_splits_into_ram_and_gives_the_same_batches(prepared_digits):
    """data.keep_in_memory=true: no split is memory-mapped from the dataset's files, and an epoch is bitwise the
    memory-mapped one."""
    mapped, in_ram = module(prepared_digits, num_workers=0), module(prepared_digits, num_workers=0, keep_in_memory=True)
    assert all(split.cache_files for split in mapped.splits.values())
    assert not any(split.cache_files for split in in_ram.splits.values())
    for a, b in zip(epoch_batches(mapped), epoch_batches(in_ram), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_pipeline_of_batched_transforms_runs_once_per_batch_with_the_same_result(prepared_digits):
    """ToUnit and NextToken say they are right on a whole batch: applied once, they give what they give applied to
    each sample in turn."""
    from hydralight.data.ondisk import PreparedRows
    from hydralight.data.transforms import NextToken, Pipeline

    data = module(prepared_digits)
    batched, per_sample = Pipeline([ToUnit("image", 16)]), Pipeline([ToUnit("image", 16)])
    per_sample.batched = False
    assert batched.batched
    key = (0, [5, 3, 900, 3])
    rows = [
        PreparedRows(data.splits["train"], data.shapes, data.columns, pipeline, 0) for pipeline in (batched, per_sample)
    ]
    assert all(torch.equal(a, b) for a, b in zip(rows[0][key], rows[1][key], strict=True))
    ids = torch.arange(12).reshape(3, 4)
    whole = NextToken()({"ids": ids}, None)
    assert torch.equal(whole["input"], torch.stack([NextToken()({"ids": row}, None)["input"] for row in ids]))
    assert torch.equal(whole["target"], ids[:, 1:])


def test_prepared_digits_are_the_in_memory_digits_split_the_same_way(prepared_digits):
    """prepare.py's digits are DigitsDataModule's, row for row, in the same train/val/test split."""
    from my_project.data.digits import DigitsDataModule

    memory = DigitsDataModule()
    memory.setup("fit")
    disk = module(prepared_digits, shuffle=False)
    for split, loader in (("train", disk.train_dataloader()), ("test", disk.test_dataloader())):
        images, labels = (torch.cat(column) for column in zip(*loader, strict=True))
        expected_images, expected_labels = memory.splits[split].tensors
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_data_sharded_under_ddp_reads_each_row_once(prepared_digits):
    """The loaders of 2 data-parallel processes (as Lightning's DDP strategy shards them) together read every row
    of every split exactly once."""
    for split in ("train", "val", "test"):
        seen = []
        for rank in range(2):
            data = module(prepared_digits)
            progress = SimpleNamespace(current=SimpleNamespace(processed=0, started=0))
            data.trainer = SimpleNamespace(
                world_size=2, global_rank=rank, distributed_sampler_kwargs={"num_replicas": 2, "rank": rank},
                fit_loop=SimpleNamespace(epoch_progress=progress, _combined_loader_states_to_load=[]),
            )  # fmt: skip
            loader = getattr(data, f"{split}_dataloader")()
            seen += [index for _, indices in loader.sampler for index in indices]
        rows = json.loads((prepared_digits / "prepared.json").read_text())["rows"][split]
        assert sorted(seen) == list(range(rows)), split


def test_a_column_no_transform_makes_is_one_clear_error(prepared_digits):
    with pytest.raises(UserError, match=r"data.columns=\['image', 'labels'\] names \['labels'\].*have: \['image', "):
        module(prepared_digits, columns=["image", "labels"])


def test_a_path_without_a_prepared_dataset_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match=rf"data.path='{tmp_path}' holds no prepared dataset .*python prepare.py"):
        module(tmp_path)


def test_prepare_never_writes_over_what_is_there(prepared_digits, tmp_path):
    """An existing `out` is refused and left as it is; overwrite=true replaces a prepared dataset, and only that."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my files")
    with pytest.raises(UserError, match=r"out='.*mine' exists already. It is kept as it is"):
        prepare_dataset(mine)
    with pytest.raises(UserError, match=r"exists and is not a prepared dataset .*overwrite=true replaces only"):
        prepare_dataset(mine, "overwrite=true")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    copy = shutil.copytree(prepared_digits, tmp_path / "digits")
    prepare_dataset(copy, "overwrite=true", "source.test_fraction=0.5")
    assert json.loads((copy / "prepared.json").read_text())["rows"]["test"] == 898  # half of 1,797
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits", "mine"]  # no leftovers


def write_image_folder(root: Path, per_class: int = 6) -> None:
    """A user's folder of images, one subfolder per class: the digits as 8-bit grey PNGs."""
    from PIL import Image

    from my_project.data.digits import load_digits

    images, labels = load_digits()
    for label in (0, 1, 2):
        (root / f"class_{label}").mkdir(parents=True)
        for i, image in enumerate(images[labels == label][:per_class]):
            pixels = (image[0].numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / f"class_{label}" / f"{i}.png")


def test_a_folder_of_images_becomes_a_dataset_with_its_classes(tmp_path):
    pytest.importorskip("PIL")
    write_image_folder(tmp_path / "pets")
    out = prepare_dataset(tmp_path / "prepared", "source=folder", f"source.path={tmp_path / 'pets'}")
    description = json.loads((out / "prepared.json").read_text())
    assert description["classes"] == ["class_0", "class_1", "class_2"]
    assert description["input_shape"] == [1, 8, 8] and description["num_classes"] == 3
    assert sum(description["rows"].values()) == 18
    data = module(out, transforms=[], batch_size=2, shuffle=False)
    labels = torch.cat([batch[1] for batch in itertools.chain(data.train_dataloader(), data.test_dataloader())])
    assert set(labels.tolist()) <= {0, 1, 2}


def test_a_folder_image_of_another_size_is_one_clear_error(tmp_path):
    from PIL import Image

    write_image_folder(tmp_path / "pets", per_class=2)
    Image.new("L", (9, 8)).save(tmp_path / "pets" / "class_1" / "odd.png")
    with pytest.raises(UserError, match=r"odd.png has shape \(1, 8, 9\), the first file .* has \(1, 8, 8\)"):
        prepare_dataset(tmp_path / "prepared", "source=folder", f"source.path={tmp_path / 'pets'}")
    assert not (tmp_path / "prepared").exists()  # nothing half-written left behind
    prepare_dataset(tmp_path / "prepared", "source=folder", f"source.path={tmp_path / 'pets'}", "source.size=[8,8]")


# copier:if gpt_example
def test_a_text_becomes_windows_that_hold_each_next_character_once(tmp_path):
    (tmp_path / "texts").mkdir()
    text = "".join(f"line {i}: the quick brown fox\n" for i in range(200))
    (tmp_path / "texts" / "a.txt").write_text(text)
    out = prepare_dataset(tmp_path / "prepared", "source=text", f"source.path={tmp_path / 'texts'}",
                          "source.block_size=16")  # fmt: skip
    description = json.loads((out / "prepared.json").read_text())
    vocab = description["vocab"]
    assert vocab == "".join(sorted(set(text))) and description["block_size"] == 16
    from datasets import load_from_disk

    train = load_from_disk(str(out))["train"].with_format("numpy")[:]["ids"]
    assert train.shape[1] == 17
    decoded = "".join(vocab[i] for i in train[0]) + "".join("".join(vocab[i] for i in row[1:]) for row in train[1:])
    assert text.startswith(decoded) and len(decoded) > 0.85 * len(text)  # consecutive windows overlap by one


# copier:endif
def test_training_on_prepared_digits_as_typed(prepared_digits, make_cfg):
    """experiment=ondisk_images: the classifier's input shape and classes come from prepared.json."""
    from hydralight.core.train import train

    cfg = make_cfg(*ONDISK, f"data.path={prepared_digits}", "data.num_workers=0")
    train(cfg)
    metrics = json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())
    assert {"val/acc_best", "test/acc", "test/loss"} <= set(metrics)


def test_an_experiment_without_its_prepared_dataset_is_one_clear_error(make_cfg, tmp_path, capsys):
    """experiment=ondisk_images before `python prepare.py`: the resolver's line (naming data.path and the command
    that writes the dataset), not omegaconf's wrapped error."""
    from hydralight.core.cli import _train, report_user_errors

    cfg = make_cfg(*ONDISK, f"data.path={tmp_path / 'nothing'}")
    with pytest.raises(SystemExit) as stop:
        report_user_errors(_train)(cfg)
    assert stop.value.code == UserError.exit_code
    assert capsys.readouterr().err == (
        f"error: data.path='{tmp_path / 'nothing'}' holds no prepared dataset (no prepared.json). Write one with "
        'python prepare.py source=digits|text|folder out=<dir> (README "Data larger than memory").\n'
    )
