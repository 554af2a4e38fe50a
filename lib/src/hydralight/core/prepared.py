"""The description `python prepare.py` writes beside an on-disk dataset (prepared.json), and `${prepared:<path>,<key>}`,
the resolver through which configs read it (a model's input shape, classes or vocabulary). JSON only: the resolver
runs while the config is resolved, before torch is imported.

A data module that writes its dataset on first use (`data.prepare_if_missing`: a source and the dir it writes) has
nothing on disk yet when the config resolves: there the resolver answers from that source itself (building it, which
imports its module), exactly what the write will put in prepared.json, and writes nothing.
"""

import json
from pathlib import Path
from typing import Any

from hydralight.core.errors import UserError

PREPARED_FILE = "prepared.json"
SPLITS = ("train", "val", "test")


def read_prepared(path: str | Path, key: str = "data.path") -> dict[str, Any]:
    """The description prepare.py wrote beside a prepared dataset, or a UserError naming `key` and its value."""
    file = Path(path) / PREPARED_FILE
    if not file.is_file():
        raise UserError(
            f"{key}={str(path)!r} holds no prepared dataset (no {PREPARED_FILE}). Write one with "
            'python prepare.py source=digits|text|folder out=<dir> (README "Data larger than memory").'
        )
    return json.loads(file.read_text())


def require_datasets(who: str) -> Any:
    """The `datasets` package (a second or two to import), or one line naming the extra that installs it."""
    try:
        import datasets
    except ImportError as error:
        raise UserError(
            f"{who} Hugging Face datasets' Arrow files: it needs the ondisk extra (pip install -e '.[ondisk]', or "
            "hydralight[ondisk])."
        ) from error
    return datasets


def first_write_allowed(path: Path) -> bool:
    """Nothing at `path` yet (or an empty dir): a first-use write there replaces nothing of anyone's."""
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def same_dir(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().absolute() == Path(b).expanduser().absolute()


def written_on_first_use(path: str, prepare_if_missing: Any) -> bool:
    """Whether `path` holds no prepared dataset yet and `prepare_if_missing` (the config's `data.prepare_if_missing`,
    or None) will write one there: it names this very dir, and the dir is not there yet (or is empty)."""
    if prepare_if_missing is None or not same_dir(path, prepare_if_missing.path):
        return False
    return not (Path(path) / PREPARED_FILE).is_file() and first_write_allowed(Path(path).expanduser().absolute())


def prepared_value(path: str, name: str) -> Any:
    """`${prepared:<path>,<name>}`: one entry of a prepared dataset's prepared.json (e.g. input_shape, vocab)."""
    return entry(read_prepared(path), path, name)


def entry(description: dict[str, Any], path: str, name: str) -> Any:
    """Entry `name` of the description of the dataset at `path`, or one line naming what it has."""
    if name not in description:
        raise UserError(
            f"${{prepared:{path},{name}}}: {PREPARED_FILE} of {path!r} has no {name!r}. It has: "
            f"{', '.join(sorted(description))}"
        )
    return description[name]
