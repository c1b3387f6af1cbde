"""Queries for jobs and what hangs off them (metric points, checkpoints). Always scoped to an owner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from api.db.models import Checkpoint, Job, JobStatus, MetricPoint


@dataclass(frozen=True)
class JobFilters:
    status: JobStatus | None = None
    regime: str | None = None
    name: str | None = None


def get_owned(session: Session, owner_id: str, job_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id, Job.owner_id == owner_id))


def get_by_idempotency_key(session: Session, owner_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def count_queued(session: Session, owner_id: str) -> int:
    return session.scalar(
        select(func.count()).select_from(Job).where(Job.owner_id == owner_id, Job.status == JobStatus.QUEUED)
    ) or 0


def insert_unless_key_taken(session: Session, values: dict[str, Any]) -> bool:
    """Insert a job carrying an idempotency key; False when the owner already used the key.

    ON CONFLICT DO NOTHING settles two concurrent submissions with one key inside the database (on
    PostgreSQL the loser waits for the winner's commit), with no savepoint, which pysqlite mishandles.
    """
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(Job)
    elif dialect == "sqlite":
        stmt = sqlite.insert(Job)
    else:
        raise RuntimeError(f"database_url: unsupported database dialect {dialect!r}")
    # RETURNING, not rowcount: the driver may report -1 rows for an INSERT it did not count.
    inserted = session.execute(
        stmt.values(**values).on_conflict_do_nothing(index_elements=["owner_id", "idempotency_key"])
        .returning(Job.id)
    ).scalar_one_or_none()
    return inserted is not None


def _filtered(owner_id: str, filters: JobFilters) -> Select[Any]:
    stmt = select(Job).where(Job.owner_id == owner_id)
    if filters.status is not None:
        stmt = stmt.where(Job.status == filters.status)
    if filters.regime is not None:
        stmt = stmt.where(Job.regime == filters.regime)
    if filters.name is not None:
        stmt = stmt.where(Job.name == filters.name)
    return stmt


def list_owned(session: Session, owner_id: str, filters: JobFilters, *, limit: int,
               offset: int) -> tuple[Sequence[Job], int]:
    """A page of the owner's jobs, newest first, and how many match in all."""
    stmt = _filtered(owner_id, filters)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset))
    return rows.all(), total


def cancel_if_queued(session: Session, job_id: str, now: datetime) -> bool:
    # Conditional, so a worker claiming the job at the same moment and this cancel cannot both win.
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def request_cancel_if_running(session: Session, job_id: str, now: datetime) -> bool:
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(cancel_requested=True, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def metric_points(session: Session, job_id: str, *, since_step: int | None, every: int,
                  limit: int) -> Sequence[tuple[int, dict[str, Any]]]:
    """(step, values) in step order; `every` keeps every k-th point of the whole series.

    Counting from the series' first point (not from `since_step`) keeps the kept points the same whether a
    client reads everything at once or polls with since_step.
    """
    if every == 1:
        stmt = select(MetricPoint.step, MetricPoint.values).where(MetricPoint.job_id == job_id)
        if since_step is not None:
            stmt = stmt.where(MetricPoint.step > since_step)
        return [(r.step, r.values) for r in session.execute(stmt.order_by(MetricPoint.step).limit(limit))]
    index = (func.row_number().over(order_by=MetricPoint.step) - 1).label("index")
    series = (select(MetricPoint.step, MetricPoint.values, index)
              .where(MetricPoint.job_id == job_id).subquery())
    kept = select(series.c.step, series.c["values"]).where(series.c.index % every == 0)
    if since_step is not None:
        kept = kept.where(series.c.step > since_step)
    return [(r.step, r.values) for r in session.execute(kept.order_by(series.c.step).limit(limit))]


def latest_checkpoint(session: Session, job_id: str) -> Checkpoint | None:
    return session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.step.desc(), Checkpoint.id.desc()).limit(1)
    )
