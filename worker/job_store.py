"""The worker's writes to a job row: claiming it, and fenced writes by the attempt that holds it.

Every write after the claim goes through `UPDATE jobs ... WHERE id = :id AND attempt = :attempt AND status =
'running'`; when that matches no row a newer attempt (or a final state set elsewhere, or the reconciler) owns
the job, and the writer stops with LeaseLost. Each write is its own short transaction, so the API never waits
on a training run, and each is safe to repeat, so a database restart is ridden out by retrying (db_retry).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from api.db.models import Checkpoint, Dataset, Job, JobStatus, MetricPoint, utcnow
from worker.db_retry import with_retries

T = TypeVar("T")


class LeaseLost(Exception):
    """A newer attempt owns the job (or it reached a final state elsewhere): stop writing."""


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    attempt: int
    owner_id: str
    queue: str
    spec: dict[str, Any]


def gave_up_error(max_attempts: int) -> str:
    return f"gave up after {max_attempts} attempts (worker lost each time)"


def _claimable(now):  # type: ignore[no-untyped-def]
    # Queued, or running under a lease that has run out (its worker died without finishing it).
    lease_over = or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)
    return or_(Job.status == JobStatus.QUEUED, and_(Job.status == JobStatus.RUNNING, lease_over))


def claim_job(session: Session, job_id: str, *, worker_id: str, lease_seconds: float,
              max_attempts: int) -> ClaimedJob | None:
    """Claim the job for a new attempt, or return None when there is nothing to run.

    Conditional UPDATEs rather than read-then-write: on PostgreSQL the WHERE is re-checked after a concurrent
    claimer commits, so only one wins; on SQLite the UPDATE takes the write lock up front, so there is no
    read-to-write lock upgrade to fail.
    """
    now = utcnow()
    base = update(Job).where(Job.id == job_id, _claimable(now))
    finished = {"lease_owner": None, "lease_expires_at": None, "finished_at": now}

    # A cancel that arrived while the job waited (or while its dead worker held it) is final.
    cancelled = session.execute(
        base.where(Job.cancel_requested.is_(True)).values(status=JobStatus.CANCELLED, **finished)
    )
    if cancelled.rowcount:
        return None
    # A job whose every attempt died mid-run must not loop forever.
    exhausted = session.execute(
        base.where(Job.attempt >= max_attempts).values(
            status=JobStatus.FAILED, error=gave_up_error(max_attempts),
            **finished,
        )
    )
    if exhausted.rowcount:
        return None
    claimed = session.execute(
        base.values(
            status=JobStatus.RUNNING,
            attempt=Job.attempt + 1,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=func.coalesce(Job.started_at, now),
            updated_at=now,
        )
    )
    if not claimed.rowcount:
        return None  # terminal, or live-leased by another worker: a duplicate delivery
    row = session.execute(select(Job.attempt, Job.owner_id, Job.queue, Job.spec).where(Job.id == job_id)).one()
    return ClaimedJob(id=job_id, attempt=row.attempt, owner_id=row.owner_id, queue=row.queue, spec=row.spec)


def _finite_or_none(values: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN/inf (PostgreSQL rejects them); a missing value is honest, a fake number is not.
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(MetricPoint).on_conflict_do_nothing(index_elements=["job_id", "step"])
    elif dialect == "sqlite":
        stmt = sqlite.insert(MetricPoint).on_conflict_do_nothing(index_elements=["job_id", "step"])
    else:
        raise RuntimeError(f"database_url: unsupported database dialect {dialect!r}")
    session.execute(stmt, rows)


class JobStore:
    """Fenced writes for one claimed attempt of one job, each retried through a database restart."""

    def __init__(self, sessions: sessionmaker[Session], job: ClaimedJob, *, lease_seconds: float,
                 artifact_dir: Path) -> None:
        self.sessions = sessions
        self.job = job
        self.lease_seconds = lease_seconds
        self.artifact_dir = artifact_dir

    def _retrying(self, what: str, write: Callable[[], T]) -> T:
        # Budget = the lease: a write that lands later than that may find the job already handed on.
        return with_retries(write, what=f"job {self.job.id} attempt {self.job.attempt}: {what}",
                            budget_seconds=self.lease_seconds)

    def _fenced_update(self, session: Session, **values: Any) -> None:
        result = session.execute(
            update(Job)
            .where(Job.id == self.job.id, Job.attempt == self.job.attempt, Job.status == JobStatus.RUNNING)
            .values(updated_at=utcnow(), **values)
        )
        if result.rowcount != 1:
            raise LeaseLost(f"job {self.job.id}: attempt {self.job.attempt} no longer holds the job")

    def _lease(self) -> dict[str, Any]:
        return {"lease_expires_at": utcnow() + timedelta(seconds=self.lease_seconds)}

    def dataset_path(self, dataset_id: str) -> Path:
        """The stored upload for a dataset the job's owner has (the API checked it; we check again)."""
        def read() -> str | None:
            with self.sessions() as session:
                return session.scalar(select(Dataset.owner_id).where(Dataset.id == dataset_id))

        if self._retrying("read its dataset", read) != self.job.owner_id:
            raise LookupError(f"data.id: dataset {dataset_id} not found")
        return self.artifact_dir / "datasets" / f"{dataset_id}.npz"

    def recorded_checkpoint_steps(self) -> set[int]:
        def read() -> set[int]:
            with self.sessions() as session:
                return set(session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == self.job.id)))

        return self._retrying("read its checkpoints", read)

    def heartbeat(self) -> bool:
        """Renew the lease; return whether a cancel was requested."""
        def write() -> bool:
            with self.sessions.begin() as session:
                self._fenced_update(session, **self._lease())
                return bool(session.scalar(select(Job.cancel_requested).where(Job.id == self.job.id)))

        return self._retrying("heartbeat", write)

    def record_metrics(self, points: list[tuple[int, dict[str, Any]]], *, total_steps: int | None) -> None:
        """One transaction per batch: progress on the job row, then the points, at most once per step."""
        if not points:
            return
        step, latest = points[-1]
        progress: dict[str, Any] = {"step": step, "latest_metrics": _finite_or_none(latest)}
        if total_steps is not None:
            progress["total_steps"] = total_steps
        rows = [{"job_id": self.job.id, "step": s, "values": _finite_or_none(v), "attempt": self.job.attempt}
                for s, v in points]

        def write() -> None:
            with self.sessions.begin() as session:
                self._fenced_update(session, **progress, **self._lease())
                _insert_ignoring_duplicates(session, rows)

        self._retrying("record metrics", write)

    def _checkpoint_row(self, session: Session, step: int, path: Path, sha256: str, final: bool) -> None:
        relpath = path.resolve().relative_to(self.artifact_dir)  # raises if the trainer wrote elsewhere
        same = (Checkpoint.job_id == self.job.id, Checkpoint.sha256 == sha256, Checkpoint.step == step)
        if final:
            # The final checkpoint is usually the one just recorded by on_checkpoint: promote it.
            promoted = session.execute(update(Checkpoint).where(*same).values(final=True))
            if promoted.rowcount:
                return
        elif session.scalar(select(Checkpoint.id).where(*same, Checkpoint.attempt == self.job.attempt)):
            return  # a retried write whose first commit landed after all
        session.execute(insert(Checkpoint).values(
            job_id=self.job.id, step=step, attempt=self.job.attempt, sha256=sha256,
            size_bytes=path.stat().st_size, final=final, relpath=relpath.as_posix(), created_at=utcnow(),
        ))

    def record_checkpoint(self, step: int, path: Path, sha256: str) -> None:
        def write() -> None:
            with self.sessions.begin() as session:
                self._fenced_update(session, **self._lease())
                self._checkpoint_row(session, step, path, sha256, final=False)

        self._retrying("record a checkpoint", write)

    def release_for_retry(self, error: str) -> None:
        """Put the job back in the queue after a failed attempt that may succeed another time.

        It is sent again by the reconciler once it has waited lease_seconds: a pause before the next attempt.
        """
        def write() -> None:
            with self.sessions.begin() as session:
                self._fenced_update(session, status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None,
                                    error=error)

        self._retrying("release for a retry", write)

    def finish(self, status: JobStatus, *, step: int | None = None,
               total_steps: int | None = None, final_metrics: dict[str, Any] | None = None,
               error: str | None = None, final_checkpoint: tuple[int, Path, str] | None = None) -> None:
        """Set the outcome (and, on success, mark the final checkpoint) in one transaction."""
        # error=None also clears the reason an earlier attempt failed with.
        values: dict[str, Any] = {"status": status, "lease_owner": None, "lease_expires_at": None,
                                  "finished_at": utcnow(), "error": error}
        if step is not None:
            values["step"] = step
        if total_steps is not None:
            values["total_steps"] = total_steps
        if final_metrics is not None:
            values["final_metrics"] = _finite_or_none(final_metrics)

        def write() -> None:
            with self.sessions.begin() as session:
                self._fenced_update(session, **values)
                if final_checkpoint is not None:
                    self._checkpoint_row(session, *final_checkpoint, final=True)

        try:
            self._retrying("set the outcome", write)
        except LeaseLost:
            # A commit whose answer was lost with the connection may have landed: then the outcome is ours.
            if not self._ended_as(status):
                raise

    def _ended_as(self, status: JobStatus) -> bool:
        with self.sessions() as session:
            row = session.execute(select(Job.status, Job.attempt).where(Job.id == self.job.id)).one()
        return (row.status, row.attempt) == (status, self.job.attempt)
