"""The reconciler: hands orphaned jobs back to their queue, so that every accepted job reaches a final state.

The job row, not the broker, is the source of truth. Each pass looks for two kinds of orphan:

- `running` with a lease that has run out: its worker died (or lost the database for a whole lease) without
  finishing. The job goes back to `queued` and is sent again; the next attempt resumes from its last
  checkpoint. It ends `cancelled` instead when a cancel is pending, `failed` when it has used max_attempts.
- `queued` and not touched for lease_seconds: its message never reached the broker (down at submit, or the
  API died between commit and send), the broker lost it (restarted without persistence), or a failed attempt
  released it for a retry. It is sent again.

The configs of a sweep go back as packs: jobs of one pack (pack_id) that are sent again in the same pass travel
as one narrownet.run_pack message and train together again, each from its own last checkpoint.

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
from core.repositories.jobs import Dispatch

log = logging.getLogger(__name__)

Enqueue = Callable[[str, str], None]
EnqueuePack = Callable[[list[str], str], None]


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
                   enqueue: Enqueue, enqueue_pack: EnqueuePack | None = None) -> ReconcileReport:
    """One pass: settle orphaned running jobs, then send every queued job nobody took for a lease (the jobs of
    one pack together through enqueue_pack when it is given, else one by one)."""
    report = ReconcileReport()
    now = utcnow()
    with sessions.begin() as session:
        settled = repo.settle_orphans(session, now, max_attempts=max_attempts)
        stale = repo.stale_queued(session, now, lease_seconds=lease_seconds)
    report.cancelled, report.failed = settled.cancelled, settled.failed
    # Sent only after the commit, like the API does: a task must never arrive before its row says queued.
    report.requeued, unsent = _send(settled.requeued, enqueue, enqueue_pack)
    if unsent:  # the broker is down: the rest wait for a later pass
        report.unsent = unsent + [d.id for d in stale]
    else:
        report.resent, report.unsent = _send(stale, enqueue, enqueue_pack)
    if report.resent:
        with sessions.begin() as session:
            repo.touch_queued(session, report.resent)
    return report


def _messages(jobs: list[Dispatch], packed: bool) -> list[tuple[list[str], str]]:
    """(job ids, queue) per message: the jobs of one pack together (when packing), every other job alone."""
    messages: list[tuple[list[str], str]] = []
    packs: dict[tuple[str, str], list[str]] = {}
    for job in jobs:
        if packed and job.pack_id is not None:
            key = (job.pack_id, job.queue)
            if key not in packs:
                packs[key] = []
                messages.append((packs[key], job.queue))
            packs[key].append(job.id)
        else:
            messages.append(([job.id], job.queue))
    return messages


def _send(jobs: list[Dispatch], enqueue: Enqueue, enqueue_pack: EnqueuePack | None) -> tuple[list[str], list[str]]:
    """Send each job (or pack); stop at the first refusal (the broker is down) and return (sent, unsent)."""
    messages = _messages(jobs, enqueue_pack is not None)
    sent: list[str] = []
    for n, (ids, queue) in enumerate(messages):
        try:
            if len(ids) > 1 and enqueue_pack is not None:
                enqueue_pack(ids, queue)
            else:
                enqueue(ids[0], queue)
        except Exception as exc:  # any failure to send: the rows stay queued and are sent on a later pass
            log.warning("could not send job(s) %s to queue %s (%s: %s); will retry", " ".join(ids), queue,
                        type(exc).__name__, exc)
            return sent, [i for rest, _ in messages[n:] for i in rest]
        sent.extend(ids)
    return sent, []


def run_reconciler(sessions: sessionmaker[Session], *, lease_seconds: float, max_attempts: int,
                   interval_seconds: float, enqueue: Enqueue, stop: threading.Event,
                   enqueue_pack: EnqueuePack | None = None) -> None:
    """Reconcile every interval_seconds until `stop` is set; a pass that fails is logged and retried."""
    log.info("reconciler: every %gs, lease %gs, max %d attempts", interval_seconds, lease_seconds, max_attempts)
    while not stop.is_set():
        started = time.monotonic()
        try:
            report = reconcile_once(sessions, lease_seconds=lease_seconds, max_attempts=max_attempts,
                                    enqueue=enqueue, enqueue_pack=enqueue_pack)
        except Exception as exc:  # the database is down, most likely: nothing is lost, try the next pass
            log.warning("reconcile pass failed (%s: %s)", type(exc).__name__, str(exc).splitlines()[0][:200])
        else:
            if report:
                log.info("%s", report.summary())
                for kind, ids in vars(report).items():
                    if ids:
                        log.debug("%s: %s", kind, " ".join(ids))
        stop.wait(max(0.0, interval_seconds - (time.monotonic() - started)))
