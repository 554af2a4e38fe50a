"""`--help` in a third of a second: the text Hydra prints, made without Hydra's slow part.

Hydra lists each config group's options by rebuilding its whole config repository once per group, ~130 groups
with the sweeper and launcher plugins installed: ~2 s on 2 CPU cores, before anything else. The app's groups are
folders of conf/ and their options are the YAML files in them, so they are read here directly; the config itself
is composed with Hydra's compose API, as Hydra's own help does. Anything beyond plain `--help [overrides]` (other
flags, a template asking for Hydra's flags or groups, a pkg:// search path, a composition error) returns None and
Hydra answers as usual. A test keeps this text equal to Hydra's.
"""

import string
from pathlib import Path

from omegaconf import OmegaConf, flag_override

from hydralight.conf import LIBRARY_CONFIG_DIR

HELP_FLAGS = ("--help", "-h")
HYDRA_ONLY_FIELDS = ("$FLAGS_HELP", "$HYDRA_CONFIG_GROUPS")


def config_groups(*roots: Path) -> str:
    """One `group: option, option` line per folder under the `roots` (but hydra/), as Hydra's `--help` lists them;
    a group in several roots lists the options of all of them."""
    groups: dict[str, set[str]] = {}
    for root in roots:
        for folder in root.rglob("*"):
            group = folder.relative_to(root).as_posix()
            if not folder.is_dir() or "__pycache__" in folder.parts or group == "hydra" or group.startswith("hydra/"):
                continue
            options = {path.stem for path in folder.iterdir() if path.is_file() and path.suffix == ".yaml"}
            groups.setdefault(group, set()).update(options)
    return "".join(f"{group}: {', '.join(sorted(groups[group]))}\n" for group in sorted(groups))


def searched_dirs(searchpath: list[str]) -> list[Path] | None:
    """The folders of `hydra.searchpath=[file://<dir>, ...]` (a task's own configs, outside conf/); None if an entry
    is no folder (pkg://...): then Hydra's own help answers. Hydra's own lists none of their options."""
    dirs = [Path(entry.removeprefix("file://")) for entry in searchpath]
    if not all(entry.startswith("file://") for entry in searchpath) or not all(path.is_dir() for path in dirs):
        return None
    return dirs


def fast_help(config_dir: str, config_name: str, job_name: str, argv: list[str]) -> str | None:
    """The `--help` text for `argv` (the command line without the program), or None to let Hydra make it."""
    flags = [arg for arg in argv if arg.startswith("-")]
    if not flags or any(flag not in HELP_FLAGS for flag in flags):
        return None
    overrides = [arg for arg in argv if not arg.startswith("-")]
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=config_dir, job_name=job_name, version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    except Exception:  # a bad override: Hydra's own path reports it, exactly as it would without --help
        return None
    template = cfg.hydra.help.template
    extra_dirs = searched_dirs(list(cfg.hydra.searchpath))
    if extra_dirs is None or any(field in template for field in HYDRA_ONLY_FIELDS):
        return None
    with flag_override(cfg, ["struct", "readonly"], False):
        del cfg["hydra"]
    return string.Template(template).substitute(
        APP_CONFIG_GROUPS=config_groups(Path(config_dir), LIBRARY_CONFIG_DIR, *extra_dirs),
        CONFIG=OmegaConf.to_yaml(cfg),
    )
