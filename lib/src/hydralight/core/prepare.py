"""`python prepare.py source=<digits|text|folder> [out=<dir>]`: a source's rows written as an on-disk dataset that
`data=ondisk` (hydralight.data.PreparedDataModule) reads: Hugging Face `datasets`' Arrow format plus prepared.json.
The same writer writes a data module's dataset on first use (`data.prepare_if_missing`, `prepare_once`).

Everything is written into a staging dir beside `out` that is this process's alone, flushed to disk, and the finished
dataset renamed into place in one step, so a failed or killed run leaves no half-written dataset at `out` (a staging
dir a dead process left is removed by the next write there), and two processes writing the same `out` at once leave
one whole dataset. An existing dir is never touched unless `overwrite=true` and it is a prepared dataset itself.
"""

import errno
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hydralight.core.console import info
from hydralight.core.errors import UserError
from hydralight.core.files import PARTIAL, fsync_dir, fsync_file, process_alive
from hydralight.core.prepared import (
    PREPARED_FILE,
    SPLITS,
    entry,
    first_write_allowed,
    read_prepared,
    require_datasets,
)
from hydralight.core.validation import instantiate

_SOURCES: dict[str, Any] = {}  # a source config (as JSON) -> the source built from it, once per process


def features(columns: dict[str, tuple[list[int], str]]) -> Any:
    """Arrow column types for `columns` (name -> (shape, dtype)): fixed-size lists nested once per dimension, which
    any `datasets` user can read and which become numpy arrays without a per-row Python object."""
    from datasets import Features, List, Value

    def column(shape: list[int], dtype: str) -> Any:
        feature = Value(dtype)
        for size in reversed(shape):
            feature = List(feature, length=size)
        return feature

    return Features({name: column(shape, dtype) for name, (shape, dtype) in columns.items()})


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse to write over anything but a prepared dataset, and over that only when asked."""
    if not out.exists():
        return
    if not overwrite:
        raise UserError(
            f"out={str(out)!r} exists already. It is kept as it is: choose another out=<dir>, or overwrite=true to "
            "replace a prepared dataset."
        )
    if not (out / PREPARED_FILE).is_file():
        raise UserError(
            f"out={str(out)!r} exists and is not a prepared dataset (no {PREPARED_FILE}): overwrite=true replaces "
            "only a prepared dataset. Choose another out=<dir>."
        )


def built_source(config: Mapping[str, Any]) -> Any:
    """The source `config` (a `_target_` and its arguments, resolved) builds, once per process: `${prepared:...}`
    asks it for several keys before the first-use write (`prepare_once`), which then writes its rows."""
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _SOURCES:
        _SOURCES[key] = instantiate(OmegaConf.create(dict(config)))
    return _SOURCES[key]


def describe(source: Any, config: Mapping[str, Any], rows: dict[str, int] | None) -> dict[str, Any]:
    """What prepared.json says of `source`'s dataset: its columns, rows per split (None: left out), the source's
    config and the source's own `description()`."""
    columns = {name: {"shape": shape, "dtype": dtype} for name, (shape, dtype) in source.columns.items()}
    counted = {"rows": rows} if rows is not None else {}
    return {"columns": columns, **counted, "source": dict(config), **source.description()}


def planned_description(config: Mapping[str, Any], rows: bool = False) -> dict[str, Any]:
    """The prepared.json that writing `config`'s source will write, without writing anything (what
    `${prepared:...}` answers before the first-use write); the rows are counted only when asked (`rows`)."""
    source = built_source(config)
    counts = {split: sum(1 for _ in source.rows(split)) for split in SPLITS} if rows else None
    return describe(source, config, counts)


def planned_value(path: str, name: str, prepare_if_missing: Any) -> Any:
    """`${prepared:<path>,<name>}` for a dataset `prepare_if_missing` writes on first use and has not written yet:
    the entry of the description the write will give it (building the source imports its module: torch)."""
    require_datasets(f"data.path={path!r} holds no dataset yet, and its first use writes")  # stop before the run
    source = OmegaConf.to_container(prepare_if_missing.source, resolve=True)
    return entry(planned_description(source, rows=name == "rows"), path, name)


def write_dataset(source: Any, dataset: Path, cache: Path, max_shard_size: str) -> dict[str, int]:
    """Each split of `source` streamed into Arrow files under `dataset` (through `cache`); the rows of each."""
    import datasets

    types = features(source.columns)
    splits = {}
    for split in SPLITS:
        try:
            splits[split] = datasets.Dataset.from_generator(
                source.rows,
                features=types,
                cache_dir=str(cache),
                gen_kwargs={"split": split},
                fingerprint=uuid.uuid4().hex,  # nothing to cache: each prepare reads the files again
            )
        except datasets.exceptions.DatasetGenerationError as error:
            if isinstance(error.__cause__, UserError):  # a bad file, found while reading it: the user's line
                raise error.__cause__ from None
            raise
    datasets.DatasetDict(splits).save_to_disk(str(dataset), max_shard_size=max_shard_size)
    return {split: len(rows) for split, rows in splits.items()}


def staging_dir(out: Path) -> Path:
    """A fresh dir beside `out` for this writer alone; its name says which machine and process made it."""
    return out.with_name(f".{out.name}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{PARTIAL}")


def remove_dead_staging(out: Path) -> list[Path]:
    """Remove the staging dirs of `out` that a process of this machine left when it died (a kill during a write);
    those of running processes, and of other machines, whose processes this one cannot see, are left alone."""
    name = re.compile(rf"\.{re.escape(out.name)}\.(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]+{re.escape(PARTIAL)}")  # staging
    removed = []
    for path in out.parent.glob(f".{out.name}.*{PARTIAL}"):
        match = name.fullmatch(path.name)
        if path.is_dir() and match and match["host"] == socket.gethostname() and not process_alive(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def flush_tree(directory: Path) -> None:
    """Every file and dir under `directory` on disk before the rename that publishes it."""
    for path in directory.rglob("*"):
        if path.is_file():
            fsync_file(path)
        else:
            fsync_dir(path)
    fsync_dir(directory)


def place(dataset: Path, out: Path, staging: Path, overwrite: bool) -> None:
    """`dataset` renamed to `out` in one step. Without `overwrite`, FileExistsError if a dataset is at `out` by now
    (another process was quicker); with it, an old prepared dataset moves into `staging` (removed with it) first."""
    if overwrite and out.exists():
        os.replace(out, staging / "old")
    try:
        os.rename(dataset, out)  # replaces nothing but an empty dir
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, "a dataset was placed first", str(out)) from None
        raise
    fsync_dir(out.parent)


def write_prepared(
    source: Any, source_config: Mapping[str, Any], out: Path, max_shard_size: str, overwrite: bool = False
) -> dict[str, Any]:
    """The one writer of prepare.py and of the first use: the rows of `source` (built from `source_config`) as a
    dataset at `out`, whole or not at all; returns its description (prepared.json). FileExistsError, and `out` as it
    is, if another process placed a dataset at `out` meanwhile (without `overwrite`)."""
    require_datasets("writing a prepared dataset writes").disable_progress_bars()
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in remove_dead_staging(out):
        info("Removed %s, what a killed write left", leftover)
    staging = staging_dir(out)
    staging.mkdir()
    try:
        rows = write_dataset(source, staging / "dataset", staging / "cache", max_shard_size)
        description = describe(source, source_config, rows)
        (staging / "dataset" / PREPARED_FILE).write_text(json.dumps(description, indent=2) + "\n")
        flush_tree(staging / "dataset")
        place(staging / "dataset", out, staging, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return description


def prepare_once(source_config: Mapping[str, Any], out: str | Path, max_shard_size: str = "500MB") -> dict[str, Any]:
    """A data module's dataset on first use (Lightning's `prepare_data`): `source_config`'s rows written to `out`
    unless a prepared dataset is there. When several processes or nodes write at once, the first dataset placed is
    kept and the others' copies are removed."""
    out = Path(out).expanduser().absolute()
    if (out / PREPARED_FILE).is_file():
        return read_prepared(out)
    if not first_write_allowed(out):
        raise UserError(
            f"data.path={str(out)!r} holds no prepared dataset (no {PREPARED_FILE}) but other files: they are kept as "
            "they are. Remove the dir to have the dataset written there on first use, or choose another data.path."
        )
    info("Writing the dataset of %s to %s on first use (once)", source_config.get("_target_"), out)
    try:
        return write_prepared(built_source(source_config), source_config, out, max_shard_size)
    except FileExistsError:
        if not (out / PREPARED_FILE).is_file():
            raise
        info("Another process wrote %s first: keeping its dataset", out)
        return read_prepared(out)


def prepare(cfg: DictConfig) -> dict[str, Any]:
    """Writes the dataset of `cfg.source` to `cfg.out` and returns its description (prepared.json)."""
    require_datasets("prepare.py writes")  # before the source is built: one line, not a traceback later
    out = Path(cfg.out).expanduser().absolute()
    check_out(out, bool(cfg.overwrite))
    source = instantiate(cfg.source)  # built afresh: the files of a folder may have changed since the last call
    info("Source: %s", cfg.source._target_)
    source_config = OmegaConf.to_container(cfg.source, resolve=True)
    try:
        description = write_prepared(source, source_config, out, str(cfg.max_shard_size), bool(cfg.overwrite))
    except FileExistsError:  # another process placed a dataset at `out` since check_out
        check_out(out, overwrite=False)
        raise
    rows, columns = description["rows"], description["columns"]
    info("Prepared %s: %s rows (%s)", out, " + ".join(str(rows[split]) for split in SPLITS), "/".join(SPLITS))
    info("Columns: %s", ", ".join(f"{name} {column['dtype']}{column['shape']}" for name, column in columns.items()))
    return description
