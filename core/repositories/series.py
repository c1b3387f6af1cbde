"""One metric of several jobs as (step, value) series in step order, read straight from the JSON column."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import MetricPoint
from core.db.statements import json_number

Series = dict[str, list[tuple[int, float]]]


def metric_series(session: Session, job_ids: Sequence[str], metric: str, *, from_step: int | None = None,
                  to_step: int | None = None, limit: int) -> Series:
    """{job_id: [(step, value), ...]} in step order; points without a number for `metric` are left out, and
    jobs without any are absent. At most `limit` points in all are read (the caller checks whether the answer
    reached it)."""
    value, is_number = json_number(session, MetricPoint.values, metric)
    stmt = select(MetricPoint.job_id, MetricPoint.step, value).where(MetricPoint.job_id.in_(job_ids), is_number)
    if from_step is not None:
        stmt = stmt.where(MetricPoint.step >= from_step)
    if to_step is not None:
        stmt = stmt.where(MetricPoint.step <= to_step)
    series: Series = {}
    # (job_id, step) is unique and indexed: the order costs no sort.
    for job_id, step, v in session.execute(stmt.order_by(MetricPoint.job_id, MetricPoint.step).limit(limit)):
        series.setdefault(job_id, []).append((step, v))
    return series
