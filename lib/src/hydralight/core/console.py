"""What a run shows a person: its log lines (once, not once per rank, without the noise of the libraries beneath it),
the config as a tree at its start and the final metrics as a table at its end."""

import logging
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

# The groups a reader looks for first; the rest follow in config order.
log = logging.getLogger(__name__)

# The groups a reader looks for first; the rest follow in config order.
FIRST = ("data", "model", "strategy", "trainer", "callbacks", "logger", "paths")


@rank_zero_only
def print_config_tree(cfg: DictConfig) -> None:
    """The resolved config, one branch per group (`print_config=true`)."""
    tree = Tree("config", guide_style="dim")
    keys = [key for key in FIRST if key in cfg] + [key for key in cfg if key not in FIRST]
    for key in keys:
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if OmegaConf.is_config(value) else f"{value}\n"
        tree.add(f"[bold]{key}[/bold]").add(Syntax(text.rstrip(), "yaml", theme="ansi_dark"))
    Console().print(tree)


@rank_zero_only
def print_final_metrics(metrics: dict[str, float], run_dir: str | Path) -> None:
    """One table of the final metrics and where the run lives."""
    table = Table(title="Final metrics", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, f"{metrics[name]:.4f}")
    console = Console()
    console.print(table)
    # A title as wide as the table would wrap the path; on a line of its own it stays whole, to copy and paste.
    console.print(f"Run dir: {run_dir}", soft_wrap=True, markup=False, highlight=False)


def quiet_console() -> None:
    """One line per message, and no noise a user can do nothing about."""
    # `import lightning` adds its own console handler; Hydra's handlers already print and write the run's log.
    lightning_logger = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)
    # Lightning 2.6 calls a torch API that torch 2.13 deprecates, once per step: Lightning's to fix, not the user's.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # The same for torchdata 0.11's StatefulDataLoader, once per epoch with loader workers.
    warnings.filterwarnings("ignore", message=r"'set_vital' is deprecated")
    # The run-dir guard (runs/guard.py) already refuses a dir with checkpoints unless this run continues them.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector"):
        if _no_noise not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_no_noise)


# Lines Lightning prints that tell the user nothing: its advert ("Tip: try installing litlogger"), that the configured
# model summary replaces its default one, that a machine without TPUs has none, the checkpoint a stage loads (twice),
# right after the project's own "Resuming from <path>" or "Testing <path>", and how the lr and batch-size finders
# reload their temporary checkpoints (this project's own loads all pass weights_only).
_NOISE = (
    "💡 Tip",
    "Trainer already configured with model summary callbacks",
    "TPU available: False",
    "Restoring states from the checkpoint path at ",
    "Loaded model weights from the checkpoint at ",
    "`weights_only` was not set, defaulting to `False`",
)


_FINDER_CHECKPOINTS = ("/.lr_find_", "/.scale_batch_size_")


def _no_noise(record: logging.LogRecord) -> bool:
    message = str(record.msg)
    return not message.startswith(_NOISE) and not any(name in message for name in _FINDER_CHECKPOINTS)


def info(message: str, *args: Any) -> None:
    """Log once per run, not once per DDP rank."""
    if rank_zero_only.rank == 0:
        log.info(message, *args)
