"""One metric of several jobs as step-ordered arrays: packed once per finished job (metric_series), or read straight
from its points' JSON column while it has no packed series (still running, or finished before they existed).

A packed series is two raw little-endian arrays, int64 steps and float64 values, read back with numpy.frombuffer:
numbers only, nothing that could run code when read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, exists, func, insert, select
from sqlalchemy.orm import Session

from core.db.models import Job, JobStatus, MetricPoint, MetricSeries
from core.db.statements import json_number

Arrays = tuple[np.ndarray, np.ndarray]  # (steps int64, values float64), steps ascending
Series = dict[str, Arrays]
STEPS, VALUES = np.dtype("<i8"), np.dtype("<f8")
_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # the names GET /v1/series accepts


def pack(points: Iterable[tuple[int, Mapping[str, Any]]]) -> Series:
    """Per metric, the steps (in the order given) whose value is a number (not a bool, not null), and the values."""
    steps: dict[str, list[int]] = {}
    values: dict[str, list[float]] = {}
    for step, point in points:
        for name, value in point.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and _METRIC.fullmatch(name):
                steps.setdefault(name, []).append(step)
                values.setdefault(name, []).append(value)
    return {name: (np.asarray(steps[name], dtype=STEPS), np.asarray(values[name], dtype=VALUES)) for name in steps}


def store_series(session: Session, job_id: str) -> None:
    """Pack the job's points into metric_series, replacing what it had. Called in the transaction that sets the
    job's outcome, after its last points: a finished job's points never change again."""
    points = session.execute(select(MetricPoint.step, MetricPoint.values).where(MetricPoint.job_id == job_id)
                             .order_by(MetricPoint.step))
    packed = pack((step, values) for step, values in points if isinstance(values, dict))
    session.execute(delete(MetricSeries).where(MetricSeries.job_id == job_id))
    if packed:
        session.execute(insert(MetricSeries), [
            {"job_id": job_id, "metric": name, "points": len(steps), "steps": steps.tobytes(),
             "values": values.tobytes()} for name, (steps, values) in packed.items()])


def unpacked_finished(session: Session, *, min_points: int, after: str, limit: int) -> list[str]:
    """Ids (in order, after `after`) of finished jobs with no packed series and at least `min_points` points: jobs
    that finished before packing existed, or below the threshold of the time."""
    points = select(func.count()).where(MetricPoint.job_id == Job.id).scalar_subquery()
    return list(session.scalars(
        select(Job.id).where(Job.status.in_([s for s in JobStatus if s.is_terminal]), Job.id > after,
                             ~exists().where(MetricSeries.job_id == Job.id), points >= max(1, min_points))
        .order_by(Job.id).limit(limit)))


def _in_range(arrays: Arrays, from_step: int | None, to_step: int | None) -> Arrays:
    steps, values = arrays
    start = 0 if from_step is None else int(np.searchsorted(steps, from_step, side="left"))
    stop = len(steps) if to_step is None else int(np.searchsorted(steps, to_step, side="right"))
    return steps[start:stop], values[start:stop]


def _packed(session: Session, job_ids: Sequence[str], metric: str, from_step: int | None, to_step: int | None,
            limit: int) -> tuple[set[str], Series]:
    """(the jobs that have packed series, their series of `metric` in range); stops reading past `limit` points."""
    packed = set(session.scalars(select(MetricSeries.job_id).where(MetricSeries.job_id.in_(job_ids)).distinct()))
    series: Series = {}
    if not packed:  # running jobs only: no second round trip
        return packed, series
    total = 0
    rows = session.execute(select(MetricSeries.job_id, MetricSeries.steps, MetricSeries.values)
                           .where(MetricSeries.job_id.in_(packed), MetricSeries.metric == metric)
                           .execution_options(yield_per=16))
    for job_id, steps, values in rows:
        found = _in_range((np.frombuffer(steps, dtype=STEPS), np.frombuffer(values, dtype=VALUES)), from_step,
                          to_step)
        if len(found[0]):
            series[job_id] = found
            total += len(found[0])
        if total > limit:
            break
    rows.close()
    return packed, series


def _from_points(session: Session, job_ids: Sequence[str], metric: str, from_step: int | None,
                 to_step: int | None, limit: int) -> Series:
    value, is_number = json_number(session, MetricPoint.values, metric)
    stmt = select(MetricPoint.job_id, MetricPoint.step, value).where(MetricPoint.job_id.in_(job_ids), is_number)
    if from_step is not None:
        stmt = stmt.where(MetricPoint.step >= from_step)
    if to_step is not None:
        stmt = stmt.where(MetricPoint.step <= to_step)
    points: dict[str, tuple[list[int], list[float]]] = {}
    # (job_id, step) is unique and indexed: the order costs no sort.
    for job_id, step, v in session.execute(stmt.order_by(MetricPoint.job_id, MetricPoint.step).limit(limit)):
        steps, values = points.setdefault(job_id, ([], []))
        steps.append(step)
        values.append(v)
    return {job_id: (np.asarray(s, dtype=STEPS), np.asarray(v, dtype=VALUES)) for job_id, (s, v) in points.items()}


def metric_series(session: Session, job_ids: Sequence[str], metric: str, *, from_step: int | None = None,
                  to_step: int | None = None, limit: int) -> Series:
    """{job_id: (steps, values)} in step order; points without a number for `metric` are left out, and jobs
    without any are absent. Reading stops soon after `limit` points in all (the caller checks whether the answer
    went past it)."""
    packed, series = _packed(session, job_ids, metric, from_step, to_step, limit)
    rest = [job_id for job_id in job_ids if job_id not in packed]
    read = sum(len(steps) for steps, _ in series.values())
    if rest and read <= limit:
        series.update(_from_points(session, rest, metric, from_step, to_step, limit + 1 - read))
    return series
