"""The description `python prepare.py` writes beside an on-disk dataset (prepared.json), and `${prepared:<path>,<key>}`,
the resolver through which configs read it (a model's input shape, classes or vocabulary). JSON only: the resolver
runs while the config is resolved, before torch is imported."""

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


def prepared_value(path: str, name: str) -> Any:
    """`${prepared:<path>,<name>}`: one entry of a prepared dataset's prepared.json (e.g. input_shape, vocab)."""
    description = read_prepared(path)
    if name not in description:
        raise UserError(
            f"${{prepared:{path},{name}}}: {PREPARED_FILE} of {path!r} has no {name!r}. It has: "
            f"{', '.join(sorted(description))}"
        )
    return description[name]
