"""Replicates in a sweep: jobs that differ only in a replicate key (`seed`, or `data.fold` of k-fold cross-validation)
form one group, summarized by the mean, standard deviation, min, max and count of each metric, best group first.

One seed says little about a setting; the mean +- std over seeds (or folds) says how good it is and how sure that is.
"""

import csv
import math
import statistics
from pathlib import Path
from typing import Any

from hydralight.core.files import atomic_path

GROUPS_CSV = "groups.csv"
STATS = ("mean", "std", "min", "max", "n")


def split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key, value


def finite_number(value: object) -> float | None:
    """`value` as a float if it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def differing_keys(overrides: list[list[str]]) -> list[str]:
    """The override keys whose values differ between the lists of overrides, in typed order."""
    per_list = [dict(split_override(override) for override in own) for own in overrides]
    keys = list(dict.fromkeys(key for own in per_list for key in own))
    return [key for key in keys if len({own.get(key) for own in per_list}) > 1]


def stats(values: list[float]) -> dict[str, float | int | None]:
    """mean, sample standard deviation (None for one value), min, max and n of `values` (all None when empty)."""
    if not values:
        return dict.fromkeys(STATS) | {"n": 0}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values), "n": len(values)}


def replicated(records: list[dict[str, Any]], replicate_keys: list[str]) -> list[str]:
    """The replicate keys whose values differ between the jobs: groups exist only when one does."""
    varied = differing_keys([record["overrides"] for record in records])
    return [key for key in replicate_keys if key in varied]


def grouped(
    records: list[dict[str, Any]],
    replicate_keys: list[str],
    metrics: list[str],
    rank_by: str | None,
    direction: str,
) -> list[dict[str, Any]]:
    """One entry per setting (the overrides left when the replicate keys are dropped), with the statistics of each
    metric over its completed jobs; best first by the mean of `rank_by` (one of `metrics`), groups without it last,
    ties in job order. Failed jobs are counted apart (`failed`), never averaged in."""
    members: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda record: record["job"]):
        setting = tuple(o for o in record["overrides"] if split_override(o)[0] not in replicate_keys)
        members.setdefault(setting, []).append(record)
    groups = []
    for setting, jobs in members.items():
        done = [job for job in jobs if job["status"] == "completed"]
        summary = {
            name: stats([v for v in (finite_number(job["metrics"].get(name)) for job in done) if v is not None])
            for name in metrics
        }
        groups.append({
            "overrides": list(setting), "jobs": [job["job"] for job in jobs], "n": len(done),
            "failed": len(jobs) - len(done), "metrics": summary,
        })  # fmt: skip
    sign = -1.0 if direction == "maximize" else 1.0

    def key(group: dict[str, Any]) -> tuple:
        mean = group["metrics"][rank_by]["mean"] if rank_by else None
        return (mean is None, sign * mean if mean is not None else 0.0, group["jobs"][0])

    return sorted(groups, key=key)


def write_groups_csv(path: Path, groups: list[dict[str, Any]], metrics: list[str]) -> None:
    """rank, the setting, n, failed, the jobs, then <metric>_mean, _std, _min, _max, _n for every metric."""
    keys = differing_keys([group["overrides"] for group in groups])
    columns = [f"{name}_{stat}" for name in metrics for stat in STATS]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["rank", *keys, "n", "failed", "jobs", *columns])
        for rank, group in enumerate(groups, start=1):
            own = dict(split_override(override) for override in group["overrides"])
            values = [group["metrics"][name][stat] for name in metrics for stat in STATS]
            writer.writerow([rank, *(own.get(key, "") for key in keys), group["n"], group["failed"],
                             " ".join(map(str, group["jobs"])), *("" if v is None else v for v in values)])  # fmt: skip


def _mean_std(summary: dict[str, Any]) -> str:
    if summary["mean"] is None:
        return "-"
    return f"{summary['mean']:.4f}" + (f" ± {summary['std']:.4f}" if summary["std"] is not None else "")


def groups_table(
    groups: list[dict[str, Any]], metrics: list[str], over: list[str], rank_by: str | None, direction: str
) -> str:
    """The printed table: per group its setting, n, failed, the mean ± std of each metric, and the min and max of the
    first (`rank_by` when there is one)."""
    keys = differing_keys([group["overrides"] for group in groups])
    first = metrics[:1]
    header = ["group", *keys, "n", "failed", *first, *(["min", "max"] if first else []), *metrics[1:]]
    rows = []
    for rank, group in enumerate(groups, start=1):
        own = dict(split_override(override) for override in group["overrides"])
        spread = [group["metrics"][name] for name in first]
        bounds = [f"{s[stat]:.4f}" if s[stat] is not None else "-" for s in spread for stat in ("min", "max")]
        rows.append([str(rank), *(own.get(key, "") for key in keys), str(group["n"]), str(group["failed"]),
                     *(_mean_std(s) for s in spread), *bounds,
                     *(_mean_std(group["metrics"][name]) for name in metrics[1:])])  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]  # fmt: skip
    order = f"best first by the mean of {rank_by} ({direction})" if rank_by else "in job order"
    count = f"{len(groups)} group{'s' if len(groups) != 1 else ''}"
    title = f"Groups over {', '.join(over)}: {count}, mean ± std over their jobs; {order}"
    return "\n".join([title, *lines])
