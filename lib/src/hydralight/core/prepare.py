"""`python prepare.py source=<digits|text|folder> [out=<dir>]`: a source's rows written as an on-disk dataset that
`data=ondisk` (hydralight.data.PreparedDataModule) reads: Hugging Face `datasets`' Arrow format plus prepared.json.

The dataset is written next to `out` under a temporary name and renamed into place once complete, so a failed or
killed run leaves nothing half-written, and an existing dir is never touched unless `overwrite=true` and it is a
prepared dataset itself.
"""

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hydralight.core.console import info
from hydralight.core.errors import UserError
from hydralight.core.prepared import PREPARED_FILE, SPLITS
from hydralight.core.validation import instantiate


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


def write_dataset(source: Any, staging: Path, max_shard_size: str) -> dict[str, int]:
    """Each split of `source` streamed into Arrow files under `staging`; the number of rows of each."""
    import datasets

    types = features(source.columns)
    with tempfile.TemporaryDirectory(dir=staging.parent, prefix=".cache-") as cache:
        splits = {}
        for split in SPLITS:
            try:
                splits[split] = datasets.Dataset.from_generator(
                    source.rows,
                    features=types,
                    cache_dir=cache,
                    gen_kwargs={"split": split},
                    fingerprint=uuid.uuid4().hex,  # nothing to cache: each prepare reads the files again
                )
            except datasets.exceptions.DatasetGenerationError as error:
                if isinstance(error.__cause__, UserError):  # a bad file, found while reading it: the user's line
                    raise error.__cause__ from None
                raise
        datasets.DatasetDict(splits).save_to_disk(str(staging), max_shard_size=max_shard_size)
    return {split: len(rows) for split, rows in splits.items()}


def replace_dir(staging: Path, out: Path) -> None:
    """`staging` renamed to `out`; an old `out` (a prepared dataset: check_out) is removed only once the new one
    is in its place."""
    if not out.exists():
        os.replace(staging, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old)


def prepare(cfg: DictConfig) -> dict[str, Any]:
    """Writes the dataset of `cfg.source` to `cfg.out` and returns its description (prepared.json)."""
    try:
        import datasets
    except ImportError as error:
        raise UserError(
            "prepare.py writes Hugging Face datasets' Arrow files: it needs the ondisk extra (pip install -e "
            "'.[ondisk]', or hydralight[ondisk])."
        ) from error

    datasets.disable_progress_bars()
    out = Path(cfg.out).expanduser().absolute()
    check_out(out, bool(cfg.overwrite))
    source = instantiate(cfg.source)
    info("Source: %s", cfg.source._target_)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        rows = write_dataset(source, staging, str(cfg.max_shard_size))
        columns = {name: {"shape": shape, "dtype": dtype} for name, (shape, dtype) in source.columns.items()}
        source_config = OmegaConf.to_container(cfg.source, resolve=True)
        description = {"columns": columns, "rows": rows, "source": source_config, **source.description()}
        (staging / PREPARED_FILE).write_text(json.dumps(description, indent=2) + "\n")
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    info("Prepared %s: %s rows (%s)", out, " + ".join(str(rows[split]) for split in SPLITS), "/".join(SPLITS))
    info("Columns: %s", ", ".join(f"{name} {column['dtype']}{column['shape']}" for name, column in columns.items()))
    return description
