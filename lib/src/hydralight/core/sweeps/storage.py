"""Optuna's `sqlite:///<file>` storage: sqlite creates the file but not its folder, and a missing folder fails deep
inside SQLAlchemy ("unable to open database file"). This callback creates the folder before the sweeper opens it."""

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SQLITE_PREFIX = "sqlite:///"


def sqlite_path(storage: object) -> Path | None:
    """The file of a `sqlite:///relative.db` or `sqlite:////absolute.db` URL; None for anything else."""
    if not isinstance(storage, str) or not storage.startswith(SQLITE_PREFIX):
        return None
    path = storage[len(SQLITE_PREFIX) :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


class StorageDir(Callback):
    """Hydra callback (registered by conf/hparams_search/*): makes the folder of the sweeper's sqlite storage."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = sqlite_path(config.hydra.sweeper.get("storage"))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
