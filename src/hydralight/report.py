"""What a run shows a person at its start and end: the config as a tree, the final metrics as a table (rank 0)."""

from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

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
