"""A checkpoint is data: the classes and functions eval, predict and export may build from one.

A checkpoint (and the run config beside it) names code: its LightningModule, its data module, and `_target_`s in its
hyperparameters that the module instantiates. Hydra's instantiate blocks only `os.system` and `subprocess`, so a
name found in a file is built only when the project allows it: the exact `_target_`s of the project's config files
(every `conf/` on Hydra's search path but Hydra's own) and of the config the user composed, and the classes (never
functions) of the project's own packages, those whose LightningModules and data modules `model/` and `data/` name.
A name is checked before anything is imported, and no interpolation under a `_target_` reaches a resolver.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from hydralight.core.errors import UserError

TARGET = "_target_"
INSTANTIATOR = "_instantiator"  # Lightning's own hook for building a module from a checkpoint
TASK_GROUPS = ("model", "data")  # their top-level `_target_`s are the project's tasks: their packages are its own


@dataclass(frozen=True)
class Allowed:
    """The names a checkpoint may use: exact targets, and the packages whose classes count as the project's."""

    targets: frozenset[str]
    packages: frozenset[str]

    def permits(self, target: str) -> bool:
        if target in self.targets:
            return True
        return target.split(".")[0] in self.packages and _is_own_class(target)

    def check_names(self, node: object, where: str) -> None:
        """UserError at the first `_target_` in `node` (plain containers) that the project does not build. Enough for
        the run config beside a checkpoint, which Hydra writes with its interpolations unresolved."""
        for key, target in targets_in(node):
            if not isinstance(target, str) or not self.permits(target):
                raise UserError(
                    f"{where} names {target!r} ({key}), which this project does not build: a checkpoint is data, "
                    "and only the classes and functions named in the project's conf/ (or classes of its own "
                    "packages) are built from one. Add a config that names it if it is yours, or put its conf/ on "
                    "hydra.searchpath."
                )

    def check(self, node: object, where: str) -> None:
        """`check_names`, and a UserError at the first interpolation under a `_target_` of a checkpoint's contents:
        instantiating resolves it (more than once), and a resolver can act (`${run_dir:...}` makes a dir), while a
        checkpoint's values are saved resolved."""
        self.check_names(node, where)
        for key, value in interpolations_in(node, under_target=False):
            raise UserError(
                f"{where} holds an interpolation under a _target_ ({key}: {value!r}); a checkpoint's values are "
                "saved resolved, so nothing in one is resolved."
            )


def targets_in(node: object, key: str = "") -> Iterator[tuple[str, object]]:
    """(where, name) for each `_target_` and Lightning `_instantiator` in plain containers, at any depth."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list | tuple) else ()
    for name, value in items:
        where = f"{key}.{name}".lstrip(".") if isinstance(node, dict) else f"{key}[{name}]"
        if name in (TARGET, INSTANTIATOR):
            yield where, value
        else:
            yield from targets_in(value, where)


def interpolations_in(node: object, under_target: bool, key: str = "") -> Iterator[tuple[str, str]]:
    """(where, value) for each string holding `${` inside a dict that has a `_target_`, at any depth."""
    if isinstance(node, dict):
        inside = under_target or TARGET in node
        for name, value in node.items():
            yield from interpolations_in(value, inside, f"{key}.{name}".lstrip("."))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from interpolations_in(value, under_target, f"{key}[{index}]")
    elif under_target and isinstance(node, str) and "${" in node:
        yield key, node


def _is_own_class(target: str) -> bool:
    """`target` is a class (a module, network or data class), not a function: importing a module of the project's own
    packages runs nothing a checkpoint chose."""
    from hydralight.compat.hydra import locate

    try:
        found = locate(target)
    except Exception:  # not importable: not built either
        return False
    return isinstance(found, type)


def allowed(cfg: DictConfig | None = None) -> Allowed:
    """What may be built from a checkpoint here: the targets of the project's config files, and of `cfg` (the config
    the user composed, overrides included)."""
    targets: set[str] = set()
    packages = {"hydralight"}
    for root in _config_roots():
        for path in sorted(root.rglob("*.yaml")):
            config = _load_yaml(path)
            targets.update(str(target) for _, target in targets_in(config))
            task = path.parent.parent == root and path.parent.name in TASK_GROUPS  # conf/model/x.yaml, conf/data/x.yaml
            if task and isinstance(config, dict) and isinstance(config.get(TARGET), str):
                packages.add(config[TARGET].split(".")[0])
    if cfg is not None:
        plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig | ListConfig) else cfg
        targets.update(str(target) for _, target in targets_in(plain))
    return Allowed(frozenset(targets), frozenset(packages))


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):  # Hydra reports a broken config file itself when it is used
        return None


# The search path of the last config composed outside Hydra's runtime (hydralight.testing.compose_config: tests,
# benchmarks): the runtime keeps its own in HydraConfig, the compose API nowhere once its context has closed.
_composed_sources: list[Any] = []


def remember_config_sources(sources: Iterable[Any]) -> None:
    """Called by `hydralight.testing.compose_config` with `hydra.runtime.config_sources` of the config it composed."""
    _composed_sources[:] = list(sources)


def _config_roots() -> Iterator[Path]:
    """The project's config dirs: Hydra's search path (its own `hydra.conf` and plugins left out), from the run's
    HydraConfig, else from the last config composed outside the runtime."""
    from hydra.core.hydra_config import HydraConfig

    sources = HydraConfig.get().runtime.config_sources if HydraConfig.initialized() else _composed_sources
    for source in sources:
        if source.provider == "hydra" or source.path.startswith("hydra_plugins"):
            continue
        if source.schema == "file":
            yield Path(source.path)
        elif source.schema == "pkg":
            package, _, sub = source.path.partition("/")
            try:
                root = resources.files(package).joinpath(sub) if sub else resources.files(package)
            except ModuleNotFoundError:
                continue
            if isinstance(root, Path):
                yield root
