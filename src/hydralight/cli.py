"""Entrypoints: compose the config with Hydra, turn user errors into one clear line, and call the task.

Only hydra and omegaconf are imported here: `--help`, `--cfg job` and config errors never load torch.
"""

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hydralight.config import validate
from hydralight.errors import RunStopped, UserError
from hydralight.resolvers import register_resolvers

log = logging.getLogger(__name__)
USER_ERROR_EXIT_CODE = UserError.exit_code


def config_dir() -> str:
    """`conf/` inside an installed wheel, else the repository's `conf/` (editable install or a plain checkout)."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "conf", package_dir.parents[1] / "conf"):
        if candidate.is_dir():
            return str(candidate)
    raise FileNotFoundError(f"hydralight: no conf/ directory next to {package_dir}")


def report_user_errors(task: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
    """Run `task`; a RunStopped (user error, divergence, preemption) becomes one line on stderr and its exit code."""

    def wrapped(cfg: DictConfig) -> object:
        try:
            return task(cfg)
        except RunStopped as stop:
            print(f"{stop.prefix}: {stop}", file=sys.stderr)
            sys.exit(stop.exit_code)

    wrapped.__name__ = task.__name__
    return wrapped


def _train(cfg: DictConfig) -> float | None:
    validate(cfg, ckpt_required=False)
    from hydralight.train import train  # heavy: torch + lightning

    return train(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, float]:
    validate(cfg, ckpt_required=True)
    from hydralight.evaluate import evaluate

    return evaluate(cfg)


def _hydra_main(task: Callable[[DictConfig], object], config_name: str) -> None:
    register_resolvers()
    main = hydra.main(config_path=config_dir(), config_name=config_name, version_base="1.3")
    main(report_user_errors(task))()


def train_main() -> None:
    """`python train.py [overrides]` and the `hydralight-train` console script."""
    _hydra_main(_train, "train")


def eval_main() -> None:
    """`python eval.py ckpt_path=<file> [overrides]` and the `hydralight-eval` console script."""
    _hydra_main(_evaluate, "eval")
