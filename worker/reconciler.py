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

from sqlalchemy.orm import Session, sessionmaker

from core.db.models import utcnow
from core.repositories import jobs as repo

log = logging.getLogger(__name__)

Enqueue = Callable[[str, str], None]


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


def reconcile_once(sessions: sessionmaker[Session], *, lease_seconds: float, max_attempts: int,
                   enqueue: Enqueue) -> ReconcileReport:
    """One pass: settle orphaned running jobs, then send every queued job nobody took for a lease."""
    report = ReconcileReport()
    now = utcnow()
    with sessions.begin() as session:
        settled = repo.settle_orphans(session, now, max_attempts=max_attempts)
        stale = repo.stale_queued(session, now, lease_seconds=lease_seconds)
    report.cancelled, report.failed = settled.cancelled, settled.failed
    # Sent only after the commit, like the API does: a task must never arrive before its row says queued.
    report.requeued, unsent = _send(settled.requeued, enqueue)
    if unsent:  # the broker is down: the rest wait for a later pass
        report.unsent = unsent + [job_id for job_id, _ in stale]
    else:
        report.resent, report.unsent = _send(stale, enqueue)
    if report.resent:
        with sessions.begin() as session:
            repo.touch_queued(session, report.resent)
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
