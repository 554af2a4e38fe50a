"""The end of a multirun: one table of every job's overrides and final metrics, best first, printed and written to
`<sweep dir>/summary.csv` and `summary.json`.

A job that fails is reported when it fails (its overrides and the error: one line for a user error, the traceback
for an internal one); the other jobs go on, and after the summary the sweep exits with code 1. Each job leaves
`<job dir>/job.json` (status, overrides, error, final metrics), which is how the summary also sees jobs that ran in
other processes (hydra/launcher=joblib). An Optuna search (hydra_plugins.hydralight_optuna) adds each job's trial to
its record: a trial its pruner stopped early is `pruned` (not failed: it finished, tested and saved like any job; it
ranks after the completed jobs), with the epoch it stopped at.
"""

import csv
import json
import os
import re
import sys
import time
import traceback
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from hydralight.compat.hydra import BASIC_SWEEPER, job_return_value
from hydralight.core import files
from hydralight.core.errors import RunStopped
from hydralight.core.sweeps.groups import (
    GROUPS_CSV,
    differing_keys,
    finite_number,
    grouped,
    groups_table,
    replicated,
    split_override,
    write_groups_csv,
)

JOB_RECORD = "job.json"
SUMMARY_CSV, SUMMARY_JSON = "summary.csv", "summary.json"
FAILED_SWEEP_EXIT_CODE = 1
# Hydra's basic sweeper re-raises the first failed job after its batch, before `on_multirun_end`: the summary and the
# jobs of later batches would be lost. For it, a failed job is recorded here and handed back as completed, no value.
ABORTS_ON_FAILED_JOB = (BASIC_SWEEPER,)
# The jobs that finished, in the order they rank: completed, then stopped early by an Optuna pruner.
FINISHED = ("completed", "pruned")
DIRECTIONS = {"maximize": "maximize", "max": "maximize", "minimize": "minimize", "min": "minimize"}
# A test metric however a module names it: test/acc, test_acc, test-acc, test.acc, testAcc (not "testing").
TEST_METRIC = re.compile(r"[Tt]est(?:[/_.\-]|[A-Z])")


def _write_json(path: Path, data: object) -> None:
    files.write_text(path, json.dumps(data, indent=2) + "\n")


def first_line(text: str, width: int = 200) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= width else line[: width - 3] + "..."


def is_test_metric(name: str) -> bool:
    """Whether a metric is a test metric, the columns the printed tables keep beside the sort metric."""
    return TEST_METRIC.match(name) is not None


def _direction(value: object) -> str:
    """maximize | minimize from a sweeper's direction (a name, an Enum, or a list of them: the first objective)."""
    if not isinstance(value, str | Enum) and hasattr(value, "__iter__"):
        value = next(iter(value), None)  # type: ignore[call-overload]
    if isinstance(value, Enum):
        value = value.name
    return DIRECTIONS.get(str(value).lower(), "maximize")


class SweepSummary(Callback):
    """Hydra callback: records each multirun job, reports failures as they happen, and summarizes the sweep.

    `metric`: the metric to sort by (train.yaml's `optimized_metric`); `direction`: maximize | minimize, by default
    the sweeper's own (Optuna's `direction`), else maximize. `replicate_keys`: jobs that differ only in these form one
    group, summarized by mean, std, min, max and n (sweeps/groups.py). `exit_on_failure`: exit with code 1 after the
    summary when a job failed.
    """

    def __init__(
        self,
        metric: str | None = None,
        direction: str | None = None,
        replicate_keys: list[str] | tuple[str, ...] = ("seed", "data.fold"),
        exit_on_failure: bool = True,
    ) -> None:
        self.metric = metric
        self.direction = direction
        self.replicate_keys = list(replicate_keys)
        self.exit_on_failure = exit_on_failure
        self.sweep_id: str | None = None
        self.fixed_keys: list[str] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Both travel with the callback to joblib workers. The id tells this sweep's job records from an earlier
        # sweep's in the same dir; the fixed keys are those typed once for every job (no sweep syntax).
        self.sweep_id = f"{time.time_ns():x}-{os.getpid()}"
        typed = [str(override) for override in config.hydra.overrides.task]
        parsed = OverridesParser.create().parse_overrides(typed)
        self.fixed_keys = [override.get_key_element() for override in parsed if not override.is_sweep_override()]

    def own_overrides(self, overrides: list[str]) -> list[str]:
        """A job's point of the sweep: its overrides of the swept keys (and of the sweeper's own search space)."""
        return [override for override in overrides if split_override(override)[0] not in self.fixed_keys] or overrides

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        overrides = [str(override) for override in job_return.overrides or []]
        num = int(config.hydra.job.num)
        record: dict[str, Any] = {"sweep": self.sweep_id, "job": num, "status": "completed", "overrides": overrides}
        if job_return.status == JobStatus.COMPLETED:
            record["value"] = finite_number(job_return.return_value)
        else:
            error = job_return_value(job_return)
            record.update(status="failed", value=None, error=f"{type(error).__name__}: {error}")
            self.report_failure(num, overrides, error, record)
            if config.hydra.sweeper.get("_target_") in ABORTS_ON_FAILED_JOB:
                job_return.status, job_return.return_value = JobStatus.COMPLETED, None
        metrics_file = job_dir / "metrics.json"
        record["metrics"] = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        record["dir"] = str(job_dir)
        job_dir.mkdir(parents=True, exist_ok=True)
        _write_json(job_dir / JOB_RECORD, record)

    def report_failure(self, num: int, overrides: list[str], error: BaseException, record: dict[str, Any]) -> None:
        """One line for a RunStopped (user error, divergence), the traceback for anything else."""
        where = f"job {num} ({' '.join(self.own_overrides(overrides))})"
        if isinstance(error, RunStopped):
            record["exit_code"] = error.exit_code
            print(f"{error.prefix}: {where} failed: {error}", file=sys.stderr, flush=True)
            return
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        record["traceback"] = trace
        print(f"error: {where} failed with an internal error:\n{trace}", file=sys.stderr, flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        records = self.read_records(sweep_dir)
        if not records:
            return
        direction = _direction(self.direction or config.hydra.sweeper.get("direction") or "maximize")
        records = self.ranked(records, direction)
        varied = self.varied_keys(records)
        over = replicated(records, self.replicate_keys)
        metrics = self.metric_names(records, everything=False)
        groups = grouped(records, over, metrics, self.metric, direction) if over else []
        self.write_csv(sweep_dir / SUMMARY_CSV, records, varied)
        if groups:
            write_groups_csv(sweep_dir / GROUPS_CSV, groups, metrics)
        _write_json(sweep_dir / SUMMARY_JSON, {"metric": self.metric, "direction": direction, "jobs": records,
                                               "replicate_keys": over, "groups": groups})  # fmt: skip
        print(self.table(records, varied, direction, sweep_dir), flush=True)
        if groups:
            print(groups_table(groups, metrics, over, self.metric, direction), flush=True)
            print(f"Written: {sweep_dir / GROUPS_CSV}", flush=True)
        failed = [record for record in records if record["status"] == "failed"]
        if failed and self.exit_on_failure:
            jobs = ", ".join(str(record["job"]) for record in sorted(failed, key=lambda record: record["job"]))
            print(f"error: {len(failed)} of {len(records)} jobs failed (job {jobs}); the others finished. "
                  f"Details: {sweep_dir / SUMMARY_CSV}", file=sys.stderr, flush=True)  # fmt: skip
            sys.exit(FAILED_SWEEP_EXIT_CODE)

    def read_records(self, sweep_dir: Path) -> list[dict[str, Any]]:
        records = []
        for path in sweep_dir.rglob(JOB_RECORD):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and (self.sweep_id is None or record.get("sweep") == self.sweep_id):
                record.pop("sweep", None)
                records.append(record)
        return records

    def score(self, record: dict[str, Any]) -> float | None:
        if record["status"] not in FINISHED:
            return None
        value = record["metrics"].get(self.metric) if self.metric else None
        return finite_number(value) if value is not None else record.get("value")

    def ranked(self, records: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
        """Best first; jobs without the metric after those with it; pruned jobs after completed ones, failed jobs
        last; ties in job order."""
        sign = -1.0 if direction == "maximize" else 1.0

        def key(record: dict[str, Any]) -> tuple:
            score = self.score(record)
            rank = FINISHED.index(record["status"]) if record["status"] in FINISHED else len(FINISHED)
            return (rank, score is None, sign * score if score is not None else 0.0, record["job"])

        return sorted(records, key=key)

    @staticmethod
    def varied_keys(records: list[dict[str, Any]]) -> list[str]:
        """The override keys whose values differ between jobs (all keys when there is one job), in typed order."""
        if len(records) == 1:
            return [split_override(override)[0] for override in records[0]["overrides"]]
        return differing_keys([record["overrides"] for record in records])

    def metric_names(self, records: list[dict[str, Any]], everything: bool) -> list[str]:
        names = sorted({name for record in records for name in record["metrics"]})
        if not everything:  # the printed table: the sort metric and the test metrics
            names = [name for name in names if is_test_metric(name)]
        return ([self.metric] if self.metric else []) + [name for name in names if name != self.metric]

    def write_csv(self, path: Path, records: list[dict[str, Any]], varied: list[str]) -> None:
        metrics = self.metric_names(records, everything=True)
        trials = ["trial", "pruned_epoch"] if any("trial" in record for record in records) else []  # Optuna's
        with files.atomic_path(path) as tmp, tmp.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["rank", "job", "status", *varied, *metrics, "error", "overrides", "dir", *trials])
            for rank, record in enumerate(records, start=1):
                own = dict(split_override(override) for override in record["overrides"])
                writer.writerow([
                    rank, record["job"], record["status"], *(own.get(key, "") for key in varied),
                    *(record["metrics"].get(name, "") for name in metrics), record.get("error") or "",
                    " ".join(record["overrides"]), record["dir"],
                    *("" if record.get(key) is None else record[key] for key in trials),
                ])  # fmt: skip

    def table(self, records: list[dict[str, Any]], varied: list[str], direction: str, sweep_dir: Path) -> str:
        metrics = self.metric_names(records, everything=False)
        # An Optuna study shared with other processes (or continued): each job's trial number in the study.
        trials = any(record.get("trial", record["job"]) != record["job"] for record in records)
        header = ["job", *(["trial"] if trials else []), "status", *varied, *metrics]
        rows = []
        for record in records:
            own = dict(split_override(override) for override in record["overrides"])
            shows = record["status"] in FINISHED  # a failed job's metrics are partial
            values = [record["metrics"].get(name) if shows else None for name in metrics]
            cells = [f"{value:.4f}" if finite_number(value) is not None else "-" for value in values]
            shown = {"completed": "ok", "pruned": f"pruned@{record.get('pruned_epoch')}"}
            status = shown.get(record["status"], "FAILED")
            trial = [str(record.get("trial", "-"))] if trials else []
            rows.append([str(record["job"]), *trial, status, *(own.get(key, "") for key in varied), *cells])
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                 for row in [header, *rows]]  # fmt: skip
        failed = sum(record["status"] not in FINISHED for record in records)
        pruned = sum(record["status"] == "pruned" for record in records)
        order = f"best first by {self.metric} ({direction})" if self.metric else "in job order"
        completed = len(records) - failed - pruned
        counts = f"{completed} ok, " + (f"{pruned} pruned, " if pruned else "") + f"{failed} failed"
        title = f"Sweep summary: {len(records)} jobs, {counts}; {order}"
        errors = [f"  job {record['job']}: {first_line(record['error'])}" for record in records if record.get("error")]
        footer = f"Written: {sweep_dir / SUMMARY_CSV}, {sweep_dir / SUMMARY_JSON}"
        return "\n".join([title, *lines, *(["Failures:", *errors] if errors else []), footer])
