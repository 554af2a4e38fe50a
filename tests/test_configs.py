"""Every config of this project composes and passes the signature check of its `_target_`s: each entry config
(conf/*.yaml) and each option of its own groups (conf/<group>/*.yaml), found by listing conf/ (the library's groups:
its own tests). An hparams_search space names only keys and options that exist."""

from functools import cache
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from hydralight.core.resolvers import register_resolvers
from hydralight.core.validation import validate_targets

CONF = Path(__file__).resolve().parents[1] / "conf"
ENTRIES = sorted(path.stem for path in CONF.glob("*.yaml"))
OPTIONS = sorted((str(path.parent.relative_to(CONF)), path.stem) for path in CONF.glob("*/**/*.yaml"))


def composed(entry: str, *overrides: str):
    """`python <entry>.py <overrides>`'s config; a group it leaves to the command line (`group: ???`, as in a copy
    without the examples) gets its first option, and where it has none yet the test is skipped."""
    register_resolvers()
    for default in yaml.safe_load((CONF / f"{entry}.yaml").read_text()).get("defaults", []):
        group, value = next(iter(default.items())) if isinstance(default, dict) else (default, None)
        if value == "???" and not any(override.startswith(f"{group}=") for override in overrides):
            options = sorted(CONF.glob(f"{group}/*.yaml")) or pytest.skip(f"{entry}: conf/{group}/ has no option yet")
            overrides = (f"{group}={options[0].stem}", *overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(entry, overrides=list(overrides), return_hydra_config=True)


@cache
def choices(entry: str) -> set[str]:
    return set(composed(entry).hydra.runtime.choices)


def entry_of(group: str) -> str:
    """The first entry config whose defaults choose `group` (train: model, data, ...; prepare: source)."""
    return next((entry for entry in ENTRIES if group in choices(entry)), "train")


@pytest.mark.parametrize("entry", ENTRIES)
def test_entry_config_composes(entry):
    validate_targets(composed(entry))


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{group}={option}" for group, option in OPTIONS])
def test_option_composes(group, option):
    if group == "hparams_search":
        pytest.importorskip("optuna", reason="needs the sweeps extra")
    entry = entry_of(group)
    if group not in choices(entry):  # e.g. model/scheduler, where no model of the project takes a schedule yet
        pytest.skip(f"no config of this project chooses {group} (none lists it in its defaults)")
    cfg = composed(entry, f"{group}={option}")
    validate_targets(cfg)
    parser = OverridesParser.create()
    for key, space in (cfg.hydra.sweeper.get("params") or {}).items():  # an Optuna search space: a typo fails here
        values = parser.parse_override(f"{key}={space}").value()
        if "/" in key:
            assert all((CONF / key / f"{choice}.yaml").is_file() for choice in values.list), key
        else:  # the key exists, and each value Optuna writes back as `key=value` parses
            assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key
            assert all(parser.parse_override(f"{key}={v}").value() is not None for v in getattr(values, "list", []))
