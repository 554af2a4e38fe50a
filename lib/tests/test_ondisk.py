"""Data larger than memory: `python prepare.py` writes a source's rows to disk, PreparedDataModule reads them with
loader workers, every row once per epoch on any number of processes, in an order fixed by the seed and the epoch. The
source is hydralight.testing's random images (`source=images`, what data=images holds in memory), never an example's.
"""

import itertools
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hydralight.core.errors import UserError
from hydralight.testing import QUICK, assert_ok, compose, run_cli
from hydralight.testing.images import PIXEL_MAX, ImageData, random_images

pytest.importorskip("datasets", reason="the ondisk extra: pip install -e '.[ondisk]'")

from hydralight.data.ondisk import PreparedDataModule, ShardedBatches
from hydralight.data.transforms import GaussianNoise, RandomShift, ToUnit

# data=ondisk_images reads the classes' shape and number from the dataset's prepared.json, as typed on a command line.
ONDISK = ("data=ondisk_images", "model=image_classifier", "model.input_shape='${prepared:${data.path},input_shape}'",
          "model.num_classes='${prepared:${data.path},num_classes}'")  # fmt: skip


def prepare_dataset(out: Path, *overrides: str) -> Path:
    """`python prepare.py out=<out> <overrides>` in hydralight.testing's project, in-process."""
    from hydralight.core.prepare import prepare

    prepare(compose("prepare", out.parent / "prepare-run", (f"out={out}", *overrides)))
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random images prepared on disk (source=images: 105 train, 15 val, 30 test rows), read by most tests."""
    return prepare_dataset(tmp_path_factory.mktemp("prepared") / "images")


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
    kwargs = {"columns": ["image", "label"], "transforms": [ToUnit("image", PIXEL_MAX)], "batch_size": 16, **kwargs}
    data = PreparedDataModule(str(path), **kwargs)
    data.setup("fit")
    return data


def epoch_batches(data: PreparedDataModule) -> list[list[torch.Tensor]]:
    return list(data.train_dataloader())


def test_workers_and_random_transforms_give_the_same_batches(prepared):
    """Random augmentations draw from (seed, epoch, row): 0 and 2 workers give bitwise the same epoch."""
    augment = [RandomShift("image", 1), GaussianNoise("image", 0.1)]
    without = epoch_batches(module(prepared, train_transforms=augment, num_workers=0))
    with_workers = epoch_batches(module(prepared, train_transforms=augment, num_workers=2))
    assert len(without) == len(with_workers) == 7  # 105 training rows at 16
    for a, b in zip(without, with_workers, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    plain = epoch_batches(module(prepared, num_workers=0))
    assert not torch.equal(plain[0][0], without[0][0])  # the augmentation did change the images
    assert torch.equal(plain[0][1], without[0][1])  # on the same rows


def test_keep_in_memory_reads_the_splits_into_ram_and_gives_the_same_batches(prepared):
    """data.keep_in_memory=true: no split is memory-mapped from the dataset's files, and an epoch is bitwise the
    memory-mapped one."""
    mapped, in_ram = module(prepared, num_workers=0), module(prepared, num_workers=0, keep_in_memory=True)
    assert all(split.cache_files for split in mapped.splits.values())
    assert not any(split.cache_files for split in in_ram.splits.values())
    for a, b in zip(epoch_batches(mapped), epoch_batches(in_ram), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_pipeline_of_batched_transforms_runs_once_per_batch_with_the_same_result(prepared):
    """ToUnit and NextToken say they are right on a whole batch: applied once, they give what they give applied to
    each sample in turn."""
    from hydralight.data.ondisk import PreparedRows
    from hydralight.data.transforms import NextToken, Pipeline

    data = module(prepared)
    batched, per_sample = Pipeline([ToUnit("image", PIXEL_MAX)]), Pipeline([ToUnit("image", PIXEL_MAX)])
    per_sample.batched = False
    assert batched.batched
    key = (0, [5, 3, 100, 3])
    rows = [
        PreparedRows(data.splits["train"], data.shapes, data.columns, pipeline, 0) for pipeline in (batched, per_sample)
    ]
    assert all(torch.equal(a, b) for a, b in zip(rows[0][key], rows[1][key], strict=True))
    ids = torch.arange(12).reshape(3, 4)
    whole = NextToken()({"ids": ids}, None)
    assert torch.equal(whole["input"], torch.stack([NextToken()({"ids": row}, None)["input"] for row in ids]))
    assert torch.equal(whole["target"], ids[:, 1:])


def test_a_prepared_source_reads_back_row_for_row(prepared):
    """What prepare.py wrote is its source's rows exactly, in each split's order: read back and scaled, the images
    and labels of every split are bitwise those data=images holds in memory, split the same way."""
    memory = ImageData()
    memory.setup("fit")
    disk = module(prepared, shuffle=False, num_workers=0)
    loaders = {"train": disk.train_dataloader(), "val": disk.val_dataloader(), "test": disk.test_dataloader()}
    for split, loader in loaders.items():
        samples, labels = (torch.cat(column) for column in zip(*loader, strict=True))
        expected_samples, expected_labels = memory.splits[split].tensors
        assert torch.equal(samples, expected_samples) and torch.equal(labels, expected_labels), split


def test_data_sharded_under_ddp_reads_each_row_once(prepared):
    """The loaders of 2 data-parallel processes (as Lightning's DDP strategy shards them) together read every row
    of every split exactly once."""
    for split in ("train", "val", "test"):
        seen = []
        for rank in range(2):
            data = module(prepared)
            progress = SimpleNamespace(current=SimpleNamespace(processed=0, started=0))
            data.trainer = SimpleNamespace(
                world_size=2, global_rank=rank, distributed_sampler_kwargs={"num_replicas": 2, "rank": rank},
                fit_loop=SimpleNamespace(epoch_progress=progress, _combined_loader_states_to_load=[]),
            )  # fmt: skip
            loader = getattr(data, f"{split}_dataloader")()
            seen += [index for _, indices in loader.sampler for index in indices]
        rows = json.loads((prepared / "prepared.json").read_text())["rows"][split]
        assert sorted(seen) == list(range(rows)), split


def test_a_column_no_transform_makes_is_one_clear_error(prepared):
    with pytest.raises(UserError, match=r"data.columns=\['image', 'labels'\] names \['labels'\].*have: \['image', "):
        module(prepared, columns=["image", "labels"])


def test_a_path_without_a_prepared_dataset_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match=rf"data.path='{tmp_path}' holds no prepared dataset .*python prepare.py"):
        module(tmp_path)


def test_prepare_never_writes_over_what_is_there(prepared, tmp_path):
    """An existing `out` is refused and left as it is; overwrite=true replaces a prepared dataset, and only that."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my files")
    with pytest.raises(UserError, match=r"out='.*mine' exists already. It is kept as it is"):
        prepare_dataset(mine)
    with pytest.raises(UserError, match=r"exists and is not a prepared dataset .*overwrite=true replaces only"):
        prepare_dataset(mine, "overwrite=true")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    copy = shutil.copytree(prepared, tmp_path / "images")
    prepare_dataset(copy, "overwrite=true", "source.test_fraction=0.5")
    assert json.loads((copy / "prepared.json").read_text())["rows"]["test"] == 75  # half of 150
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "mine"]  # no leftovers


def write_image_folder(root: Path, per_class: int = 6) -> None:
    """A user's folder of images, one subfolder per class: random 8x8 8-bit grey PNGs."""
    from PIL import Image

    pixels = random_images(3 * per_class, seed=1)[0] * (255 // PIXEL_MAX)
    for label in (0, 1, 2):
        (root / f"class_{label}").mkdir(parents=True)
        for i, image in enumerate(pixels[label * per_class : (label + 1) * per_class]):
            Image.fromarray(image[0], mode="L").save(root / f"class_{label}" / f"{i}.png")


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


def test_a_corrupt_image_is_one_clear_error_naming_it(tmp_path):
    """A truncated PNG in the folder: one UserError naming the file (not PIL's, then datasets' traceback), and nothing
    written."""
    pytest.importorskip("PIL")
    write_image_folder(tmp_path / "pets", per_class=2)
    good = (tmp_path / "pets" / "class_1" / "0.png").read_bytes()
    (tmp_path / "pets" / "class_1" / "broken.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match=r"broken.png cannot be read .* Fix or remove the file"):
        prepare_dataset(tmp_path / "prepared", "source=folder", f"source.path={tmp_path / 'pets'}")
    assert not (tmp_path / "prepared").exists()


def test_an_empty_class_folder_is_refused_not_made_a_class(tmp_path):
    """A class folder with no image would become a class no sample has (a dead output of the model): refused in one
    line naming it."""
    pytest.importorskip("PIL")
    write_image_folder(tmp_path / "pets", per_class=2)
    (tmp_path / "pets" / "class_3").mkdir()
    with pytest.raises(UserError, match=r"the class folder\(s\) class_3 hold no image"):
        prepare_dataset(tmp_path / "prepared", "source=folder", f"source.path={tmp_path / 'pets'}")


def test_prepare_without_the_ondisk_extra_says_which_to_install(tmp_path, monkeypatch):
    """No `datasets` installed: one line naming the extra, not a ModuleNotFoundError."""
    import builtins

    real_import = builtins.__import__

    def without_datasets(name, *args, **kwargs):
        if name == "datasets" or name.startswith("datasets."):
            raise ModuleNotFoundError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_datasets)
    with pytest.raises(UserError, match=r"needs the ondisk extra"):
        prepare_dataset(tmp_path / "prepared")


def test_training_on_a_prepared_dataset_as_typed(prepared, make_cfg):
    """data=ondisk_images: the module's input shape and classes come from the dataset's prepared.json."""
    from hydralight.core.train import train

    cfg = make_cfg(*ONDISK, f"data.path={prepared}")
    train(cfg)
    assert (cfg.model.input_shape, cfg.model.num_classes) == ([1, 8, 8], 3)
    metrics = json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())
    assert {"val/loss_best", "test/loss"} <= set(metrics)
    assert all(np.isfinite(value) for value in metrics.values())


def test_a_config_without_its_prepared_dataset_is_one_clear_error(make_cfg, tmp_path, capsys):
    """data=ondisk_images before `python prepare.py`: the resolver's line (naming data.path and the command that
    writes the dataset), not omegaconf's wrapped error."""
    from hydralight.core.cli import _train, report_user_errors

    cfg = make_cfg(*ONDISK, f"data.path={tmp_path / 'nothing'}")
    with pytest.raises(SystemExit) as stop:
        report_user_errors(_train)(cfg)
    assert stop.value.code == UserError.exit_code
    assert capsys.readouterr().err == (
        f"error: data.path='{tmp_path / 'nothing'}' holds no prepared dataset (no prepared.json). Write one with "
        'python prepare.py source=digits|text|folder out=<dir> (README "Data larger than memory").\n'
    )


# First use: experiment=ondisk_images writes its dataset (source=images) through the data module's prepare_data, the
# first time a run finds nothing at data.path. The writer is prepare.py's (hydralight.core.prepare.prepare_once).


def images_source() -> dict:
    """source=images as prepare.py and experiment=ondisk_images both compose it."""
    from omegaconf import OmegaConf

    from hydralight.testing import CONFIG_DIR

    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "source" / "images.yaml"))


def first_use_answers(project: Path) -> dict:
    """What `${prepared:...}` gives experiment=ondisk_images in `project`: the model's shape and classes, the
    transform's pixel scale."""
    from omegaconf import OmegaConf

    cfg = compose("train", project / "run", ("experiment=ondisk_images",))
    return {"model": OmegaConf.to_container(cfg.model, resolve=True), "max_value": cfg.data.transforms[0].max_value}


def test_the_first_run_writes_its_dataset_once_what_prepare_writes(project, tmp_path):
    """experiment=ondisk_images on a fresh project: the config resolves from the source itself before anything is
    written, the run trains, and the dataset it wrote is what `python prepare.py` writes for that source (the same
    prepared.json), with the resolver's answers unchanged. A second use writes nothing."""
    from hydralight.core.build import build_datamodule
    from hydralight.core.prepare import planned_description

    data = project / "data" / "images"
    before = first_use_answers(project)
    assert not data.exists()  # resolving wrote nothing
    assert (before["model"]["input_shape"], before["model"]["num_classes"], before["max_value"]) == (
        [1, 8, 8],
        3,
        PIXEL_MAX,
    )
    planned = planned_description(images_source(), rows=True)

    result = run_cli("train.py", "experiment=ondisk_images", *QUICK, cwd=project)
    assert_ok(result)
    assert f"Writing the dataset of hydralight.testing.images.image_source to {data} on first use (once)" in (
        result.stdout + result.stderr
    )
    written = json.loads((data / "prepared.json").read_text())
    by_prepare = json.loads((prepare_dataset(tmp_path / "by_prepare" / "images") / "prepared.json").read_text())
    assert written == by_prepare == planned
    assert first_use_answers(project) == before
    assert sorted(path.name for path in data.parent.iterdir()) == ["images"]  # no staging left

    stamps = {path: path.stat().st_mtime_ns for path in data.rglob("*")}
    build_datamodule(compose("train", project / "run", ("experiment=ondisk_images",)).data).prepare_data()
    assert {path: path.stat().st_mtime_ns for path in data.rglob("*")} == stamps


def test_a_data_path_of_ones_own_holding_nothing_is_one_line_and_never_written(project):
    """experiment=ondisk_images data.path=<another dir>: that dir is the user's, never written; today's one line,
    exit 2, no run dir, and the experiment's own dir is not written either."""
    mine = project / "mine"
    result = run_cli("train.py", "experiment=ondisk_images", f"data.path={mine}", *QUICK, cwd=project)
    assert result.returncode == UserError.exit_code, result.stderr
    assert result.stderr == (
        f"error: data.path='{mine}' holds no prepared dataset (no prepared.json). Write one with python prepare.py "
        'source=digits|text|folder out=<dir> (README "Data larger than memory").\n'
    )
    assert not mine.exists() and not (project / "data").exists()
    assert not [path for path in (project / "outputs").rglob("*") if path.is_file()]  # no run dir, no log


def test_two_processes_writing_at_once_leave_one_whole_dataset(tmp_path, monkeypatch, caplog):
    """Two writers of the same dir, both done writing before either puts its copy in place (a forced race): the
    first rename wins, the other keeps it and removes its own copy; one whole dataset, nothing else beside it."""
    import threading

    from datasets import load_from_disk

    from hydralight.core import prepare

    both_written = threading.Barrier(2, timeout=120)
    real_place = prepare.place

    def place_together(*args, **kwargs):
        both_written.wait()
        return real_place(*args, **kwargs)

    monkeypatch.setattr(prepare, "place", place_together)
    out, results = tmp_path / "data" / "images", []
    threads = [
        threading.Thread(target=lambda: results.append(prepare.prepare_once(images_source(), out))) for _ in range(2)
    ]
    with caplog.at_level("INFO"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
    assert f"Another process wrote {out} first: keeping its dataset" in caplog.text
    assert len(results) == 2 and results[0] == results[1]
    assert json.loads((out / "prepared.json").read_text()) == results[0]
    assert {split: len(rows) for split, rows in load_from_disk(str(out)).items()} == results[0]["rows"]
    assert [path.name for path in out.parent.iterdir()] == ["images"]


def test_a_write_killed_halfway_leaves_nothing_at_the_path(tmp_path):
    """kill -9 while the rows are being written: nothing at the path (the staging dir only), and the next first use
    writes the dataset and removes what the dead writer left."""
    import multiprocessing
    import os
    import signal

    from hydralight.core import prepare

    out, context = tmp_path / "data" / "images", multiprocessing.get_context("fork")
    halfway = context.Event()

    def write_and_stall() -> None:
        source = prepare.built_source(images_source())
        rows = source.rows

        def stalling_rows(split):
            yield from rows(split) if split != "test" else ()
            halfway.set()  # train and val are written: now the kill
            signal.pause()

        source.rows = stalling_rows
        prepare.prepare_once(images_source(), out)

    writer = context.Process(target=write_and_stall)
    writer.start()
    assert halfway.wait(timeout=120)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join()
    assert not out.exists()
    (staging,) = out.parent.iterdir()
    assert staging.name.startswith(".images.") and staging.name.endswith(".partial") and any(staging.rglob("*.arrow"))

    prepare.prepare_once(images_source(), out)
    assert (out / "prepared.json").is_file()
    assert [path.name for path in out.parent.iterdir()] == ["images"]  # the dead writer's staging is gone


def test_the_first_use_without_the_ondisk_extra_says_which_to_install(project, monkeypatch, capsys):
    """experiment=ondisk_images with no `datasets` installed: one line naming the extra while the config resolves,
    before anything is built or written."""
    import builtins

    from hydralight.core.cli import _train, report_user_errors

    real_import = builtins.__import__

    def without_datasets(name, *args, **kwargs):
        if name == "datasets" or name.startswith("datasets."):
            raise ModuleNotFoundError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    cfg = compose("train", project / "run", (*QUICK, "experiment=ondisk_images"))
    monkeypatch.setattr(builtins, "__import__", without_datasets)
    with pytest.raises(SystemExit) as stop:
        report_user_errors(_train)(cfg)
    assert stop.value.code == UserError.exit_code
    assert "needs the ondisk extra (pip install -e '.[ondisk]'" in capsys.readouterr().err
    assert not (project / "data").exists()
