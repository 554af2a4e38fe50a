"""The library's config groups (hydra, paths, trainer, strategy, callbacks, logger, debug, tune, cluster), on every
Hydra app's search path as `pkg://hydralight.conf` (hydra_plugins.hydralight_searchpath)."""

from pathlib import Path

LIBRARY_CONFIG_DIR = Path(__file__).parent
