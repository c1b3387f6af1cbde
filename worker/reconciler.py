"""The reconciler: hands orphaned jobs back to their queue, so that every accepted job reaches a final state.

The job row, not the broker, is the source of truth. Each pass looks for two kinds of orphan:

- `running` with a lease that has run out: its worker died (or lost the database for a whole lease) without
  finishing. The job goes back to `queued` and is sent again; the next attempt resumes from its last
  checkpoint. It ends `cancelled` instead when a cancel is pending, `failed` when it has used max_attempts.
- `queued` and not touched for lease_seconds: its message never reached the broker (down at submit, or the
  API died between commit and send), the broker lost it (restarted without persistence), or a failed attempt
  released it for a retry. It is sent again.

Sending twice is harmless: a claim is a conditional UPDATE, so a duplicate delivery finds the job taken and
exits. Recovery bound: a worker renews its lease about once a second, so the lease runs out at most
lease_seconds after the worker dies, and the next pass comes within reconcile_interval_seconds; the job is
back on its queue within R = lease_seconds + reconcile_interval_seconds (once the broker answers again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from api.db.models import Job, JobStatus, utcnow
from worker.job_store import gave_up_error

log = logging.getLogger(__name__)

Enqueue = Callable[[str, str], None]
BATCH = 500  # jobs per kind per pass: bounds one transaction; a larger backlog takes more passes


@dataclass
class ReconcileReport:
    requeued: list[str] = field(default_factory=list)  # lease ran out: back to queued and sent
    resent: list[str] = field(default_factory=list)  # queued but unclaimed for a lease: sent again
    failed: list[str] = field(default_factory=list)  # lease ran out on its last attempt
    cancelled: list[str] = field(default_factory=list)  # lease ran out with a cancel pending
    unsent: list[str] = field(default_factory=list)  # the broker refused: tried again next pass

    def __bool__(self) -> bool:
        return any((self.requeued, self.resent, self.failed, self.cancelled, self.unsent))

    def summary(self) -> str:
        counts = {name: len(ids) for name, ids in vars(self).items() if ids}
        return "reconciled: " + ", ".join(f"{n} {name}" for name, n in counts.items())


def _orphaned(now: datetime) -> ColumnElement[bool]:
    lease_over = or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)
    return and_(Job.status == JobStatus.RUNNING, lease_over)


def _settle(session: Session, condition: ColumnElement[bool], **values: Any) -> list[tuple[str, str]]:
    """UPDATE the jobs matching `condition`; return (id, queue) of those changed.

    Rows another transaction holds are skipped (FOR UPDATE SKIP LOCKED on PostgreSQL), so a pass never waits
    on a worker's write, and two reconcilers never settle one job twice: the WHERE is checked again under
    the lock.
    """
    chosen = (select(Job.id).where(condition).order_by(Job.created_at).limit(BATCH)
              .with_for_update(skip_locked=True))
    rows = session.execute(
        update(Job).where(Job.id.in_(chosen.scalar_subquery()), condition).values(**values)
        .returning(Job.id, Job.queue).execution_options(synchronize_session=False)
    )
    return [(r.id, r.queue) for r in rows]


def reconcile_once(sessions: sessionmaker[Session], *, lease_seconds: float, max_attempts: int,
                   enqueue: Enqueue) -> ReconcileReport:
    """One pass: settle orphaned running jobs, then send every queued job nobody took for a lease."""
    report = ReconcileReport()
    now = utcnow()
    finished = {"lease_owner": None, "lease_expires_at": None, "finished_at": now, "updated_at": now}
    with sessions.begin() as session:
        orphaned = _orphaned(now)
        # A cancel is final: an orphan with a pending cancel is not run again.
        report.cancelled = [i for i, _ in _settle(session, and_(orphaned, Job.cancel_requested.is_(True)),
                                                   status=JobStatus.CANCELLED, **finished)]
        report.failed = [i for i, _ in _settle(session, and_(orphaned, Job.attempt >= max_attempts),
                                                status=JobStatus.FAILED, error=gave_up_error(max_attempts),
                                                **finished)]
        requeued = _settle(session, orphaned, status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None,
                           updated_at=now)
        stale = session.execute(
            select(Job.id, Job.queue)
            .where(Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False),
                   Job.updated_at < now - timedelta(seconds=lease_seconds))
            .order_by(Job.created_at).limit(BATCH)
        ).all()
    # Sent only after the commit, like the API does: a task must never arrive before its row says queued.
    report.requeued, unsent = _send(requeued, enqueue)
    if unsent:  # the broker is down: the rest wait for a later pass
        report.unsent = unsent + [r.id for r in stale]
    else:
        report.resent, report.unsent = _send([(r.id, r.queue) for r in stale], enqueue)
    if report.resent:
        # The resend restarts the job's wait: it is sent again only if still unclaimed a lease from now.
        with sessions.begin() as session:
            session.execute(update(Job).where(Job.id.in_(report.resent), Job.status == JobStatus.QUEUED)
                            .values(updated_at=utcnow()).execution_options(synchronize_session=False))
    return report


def _send(jobs: list[tuple[str, str]], enqueue: Enqueue) -> tuple[list[str], list[str]]:
    """Send each job; stop at the first refusal (the broker is down) and return (sent, unsent)."""
    for n, (job_id, queue) in enumerate(jobs):
        try:
            enqueue(job_id, queue)
        except Exception as exc:  # any failure to send: the row stays queued and is sent on a later pass
            log.warning("could not send job %s to queue %s (%s: %s); will retry", job_id, queue,
                        type(exc).__name__, exc)
            return [i for i, _ in jobs[:n]], [i for i, _ in jobs[n:]]
    return [i for i, _ in jobs], []


def run_reconciler(sessions: sessionmaker[Session], *, lease_seconds: float, max_attempts: int,
                   interval_seconds: float, enqueue: Enqueue, stop: threading.Event) -> None:
    """Reconcile every interval_seconds until `stop` is set; a pass that fails is logged and retried."""
    log.info("reconciler: every %gs, lease %gs, max %d attempts", interval_seconds, lease_seconds, max_attempts)
    while not stop.is_set():
        started = time.monotonic()
        try:
            report = reconcile_once(sessions, lease_seconds=lease_seconds, max_attempts=max_attempts,
                                    enqueue=enqueue)
        except Exception as exc:  # the database is down, most likely: nothing is lost, try the next pass
            log.warning("reconcile pass failed (%s: %s)", type(exc).__name__, str(exc).splitlines()[0][:200])
        else:
            if report:
                log.info("%s", report.summary())
                for kind, ids in vars(report).items():
                    if ids:
                        log.debug("%s: %s", kind, " ".join(ids))
        stop.wait(max(0.0, interval_seconds - (time.monotonic() - started)))
