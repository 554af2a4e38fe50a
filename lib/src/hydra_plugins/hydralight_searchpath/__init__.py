"""Hydra finds this plugin by itself (the `hydra_plugins` namespace): it puts the hydralight library's config groups
(hydra, paths, trainer, strategy, callbacks, logger, debug, tune, cluster) on every app's search path, after the
project's own `conf/`, so a project's file of the same group and name takes precedence, and a `hydra.searchpath` the
user sets on the command line adds to them rather than replacing them."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

LIBRARY_CONFIGS = "pkg://hydralight.conf"


class HydralightSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="hydralight", path=LIBRARY_CONFIGS)
