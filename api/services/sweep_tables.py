"""A sweep's numbers from its configs' rows: status, progress, ETA, the best config, the Figure-4 summary table and
the results as CSV. Pure functions over rows (no SQL, no torch): the heatmap draws the same summary.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from core.db.models import JobStatus
from core.jsonvalues import finite_or_none
from core.repositories.jobs import SweepConfigRow, SweepTally
from trainer.grid import METRICS, metric_value

SweepStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Reduce = Literal["min", "max"]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ----------------------------------------------------------------------------------------- status, progress
def status_of(tally: SweepTally, n_configs: int, cancel_requested: bool) -> SweepStatus:
    """queued: no config has started; running: some have, not all are finished; once all are finished:
    cancelled (the sweep was cancelled while configs were unfinished), succeeded (at least one config succeeded:
    a diverged config is an answer of a grid, not a failure of it; the counts say how many), else failed. A cancel
    that came after every config had finished changes nothing."""
    counts = tally.counts
    finished = sum(n for status, n in counts.items() if status.is_terminal)
    if finished >= n_configs:
        if cancel_requested and counts.get(JobStatus.CANCELLED):
            return "cancelled"
        return "succeeded" if counts.get(JobStatus.SUCCEEDED) else "failed"
    return "queued" if counts.get(JobStatus.QUEUED, 0) == n_configs else "running"


def progress_of(tally: SweepTally, n_configs: int) -> float:
    """Finished configs count whole; unfinished ones by their steps done."""
    if n_configs <= 0:
        return 1.0
    finished = sum(n for status, n in tally.counts.items() if status.is_terminal)
    active = n_configs - finished
    partial = active * tally.active_steps / tally.active_total_steps if tally.active_total_steps else 0.0
    return min(max((finished + partial) / n_configs, 0.0), 1.0)


def eta_seconds(progress: float, started_at: datetime | None, now: datetime, status: SweepStatus) -> float | None:
    """Remaining time at the rate so far, while running."""
    if status != "running" or started_at is None or progress <= 0:
        return None
    elapsed = (_utc(now) - _utc(started_at)).total_seconds()
    return round(elapsed / progress * (1 - progress), 3) if elapsed > 0 else None


def first_started(configs: Iterable[SweepConfigRow]) -> datetime | None:
    times = [c.started_at for c in configs if c.started_at is not None]
    return min(times, key=_utc) if times else None


def last_finished(configs: Sequence[SweepConfigRow]) -> datetime | None:
    times = [c.finished_at for c in configs]
    if not times or any(t is None for t in times):
        return None
    return max((t for t in times if t is not None), key=_utc)


# ------------------------------------------------------------------------------------------------------ best
def config_value(config: SweepConfigRow, metric: str) -> float | None:
    """A config's value of the metric: final when it succeeded, latest while it runs; None otherwise."""
    if config.status is JobStatus.SUCCEEDED:
        return metric_value(config.final_metrics, metric)
    if config.status is JobStatus.RUNNING:
        return metric_value(config.latest_metrics, metric)
    return None


def _better(a: float, b: float, reduce: Reduce) -> bool:
    return a < b if reduce == "min" else a > b


def best_config(configs: Iterable[SweepConfigRow], metric: str, mode: Reduce) -> dict[str, Any] | None:
    """The best config so far by the objective: succeeded ones by their final metrics, running ones by their
    latest (marked `final: false`)."""
    best: tuple[float, SweepConfigRow] | None = None
    for config in configs:
        value = config_value(config, metric)
        if value is not None and (best is None or _better(value, best[0], mode)):
            best = (value, config)
    if best is None:
        return None
    value, config = best
    return {"job_id": config.id, "index": config.sweep_index, "params": config.params, "metric": metric,
            "value": value, "status": config.status.value, "final": config.status is JobStatus.SUCCEEDED}


# ---------------------------------------------------------------------------------------------------- summary
@dataclass(frozen=True)
class SummaryRequest:
    rows: str
    cols: str | None
    split: str | None
    metric: str
    reduce: Reduce


def figure4_axes(axes: Sequence[str]) -> tuple[str, str | None, str | None]:
    """(rows, cols, split) of the heatmap the dashboard opens with: Figure 4's width by radius, a panel per regime,
    for each of them the grid has; the grid's other axes fill the places it lacks, in order."""
    preferred = ("model.width", "constraint.radius", "regime")
    rest = [a for a in axes if a not in preferred]
    rows, cols, split = (a if a in axes else (rest.pop(0) if rest else None) for a in preferred)
    if rows is None:  # the grid has no width and no other axis: the radius, or else the regime, goes down the side
        rows, cols = cols, None
    if rows is None:
        rows, split = split, None
    assert rows is not None  # a sweep has at least one axis
    return rows, cols, split


def _index(values: Sequence[Any]) -> dict[str, int]:
    return {canonical(v): i for i, v in enumerate(values)}


def summarize(grid: Mapping[str, Sequence[Any]], configs: Sequence[SweepConfigRow],
              ask: SummaryRequest) -> dict[str, Any]:
    """For each (split, row, col) cell: the best value of the metric over the grid's other axes among succeeded
    configs, and the job that achieved it (null when no config of the cell succeeded with a finite value)."""
    row_values = list(grid[ask.rows])
    col_values = list(grid[ask.cols]) if ask.cols else [None]
    split_values = list(grid[ask.split]) if ask.split else [None]
    rows_at, cols_at, splits_at = _index(row_values), _index(col_values), _index(split_values)

    def cell(row: Any, col: Any) -> dict[str, Any]:
        return {"row": row, "col": col, "value": None, "job_id": None, "params": None, "configs": 0,
                "succeeded": 0}

    cells = [[[cell(r, c) for c in col_values] for r in row_values] for _ in split_values]
    recorded: set[str] = set()  # the metrics some succeeded config has a value of: the choices for `metric`
    for config in configs:
        p = config.params
        s = splits_at.get(canonical(p.get(ask.split))) if ask.split else 0
        c = cols_at.get(canonical(p.get(ask.cols))) if ask.cols else 0
        r = rows_at.get(canonical(p.get(ask.rows)))
        if s is None or r is None or c is None:
            continue  # not a value of the grid (cannot happen for rows the sweep created)
        target = cells[s][r][c]
        target["configs"] += 1
        if config.status is not JobStatus.SUCCEEDED:
            continue
        target["succeeded"] += 1
        recorded.update(name for name in (config.final_metrics or {})
                        if name not in recorded and metric_value(config.final_metrics, name) is not None)
        value = metric_value(config.final_metrics, ask.metric)
        if value is not None and (target["value"] is None or _better(value, target["value"], ask.reduce)):
            target.update(value=value, job_id=config.id, params=config.params)
    return {
        "metric": ask.metric, "metrics": [m for m in METRICS if m in recorded], "reduce": ask.reduce,
        "rows": {"axis": ask.rows, "values": row_values},
        "cols": {"axis": ask.cols, "values": col_values} if ask.cols else None,
        "split": {"axis": ask.split, "values": split_values} if ask.split else None,
        "panels": [{"split": value, "cells": panel} for value, panel in zip(split_values, cells, strict=True)],
    }


# -------------------------------------------------------------------------------------------------- results
def result_row(config: SweepConfigRow) -> dict[str, Any]:
    return {"index": config.sweep_index, "job_id": config.id, "params": config.params,
            "status": config.status.value, "final_metrics": finite_or_none(config.final_metrics),
            "error": config.error, "reused_from": config.reused_from}


def results_csv(axes: Sequence[str], configs: Sequence[SweepConfigRow]) -> str:
    """One header line and one line per config: index, job_id, status, the grid's axes, every final metric,
    error. Missing and non-finite values are empty; list values (model.hidden) are JSON."""
    metrics = sorted({k for c in configs for k in (c.final_metrics or {})})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "job_id", "status", *axes, *metrics, "error"])

    def text(value: Any) -> str:
        value = finite_or_none(value)
        if value is None:
            return ""
        return json.dumps(value) if isinstance(value, list | dict) else str(value)

    for c in configs:
        final = c.final_metrics or {}
        writer.writerow([c.sweep_index, c.id, c.status.value, *(text(c.params.get(a)) for a in axes),
                         *(text(final.get(m)) for m in metrics), c.error or ""])
    return out.getvalue()
