"""reconcile_once against a real database (SQLite and PostgreSQL) and a real kombu broker (SQLite transport)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from core.db.models import Checkpoint, Job, JobStatus, MetricPoint, utcnow
from core.queue import enqueue_job, enqueue_pack, make_celery
from tests.broker import drain_queue
from tests.worker.conftest import WorkerDb, tiny_spec
from worker.reconciler import ReconcileReport, reconcile_once

LEASE = 30.0


class Broker:
    def __init__(self, url: str) -> None:
        self.url = url
        self.app = make_celery(url)

    def send(self, job_id: str, queue_name: str) -> None:
        enqueue_job(self.app, job_id, queue_name)

    def drain(self, name: str = "cpu") -> list[str]:
        """The job ids waiting in queue `name`, consumed as a worker would."""
        return [message.payload[0][0] for message in drain_queue(self.url, name)]


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    yield b
    b.app.close()


@pytest.fixture(autouse=True)
def only_this_tests_jobs(worker_db: WorkerDb) -> None:
    """The reconciler looks at every job; drop those earlier tests of the session left behind."""
    with worker_db.sessions.begin() as s:
        for table in (MetricPoint, Checkpoint, Job):
            s.execute(delete(table))


def reconcile(db: WorkerDb, broker: Broker, *, lease: float = LEASE, max_attempts: int = 3) -> ReconcileReport:
    return reconcile_once(db.sessions, lease_seconds=lease, max_attempts=max_attempts, enqueue=broker.send)


def ago(seconds: float):  # type: ignore[no-untyped-def]
    return utcnow() - timedelta(seconds=seconds)


def set_job(db: WorkerDb, job_id: str, **values) -> None:  # type: ignore[no-untyped-def]
    with db.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def orphan(db: WorkerDb, **fields) -> str:  # type: ignore[no-untyped-def]
    """A job whose worker died mid-run: running, its lease run out a second ago."""
    values = dict(status=JobStatus.RUNNING, attempt=1, lease_owner="dead:1:t", step=100,
                  lease_expires_at=ago(1), updated_at=ago(LEASE + 1))
    values.update(fields)
    return db.add_job(tiny_spec(), **values)


def test_an_orphan_goes_back_to_its_queue_once(worker_db, broker):
    job_id = orphan(worker_db)
    live = worker_db.add_job(tiny_spec(), status=JobStatus.RUNNING, attempt=1, lease_owner="alive:2:t",
                             lease_expires_at=utcnow() + timedelta(seconds=LEASE))

    report = reconcile(worker_db, broker)

    assert report.requeued == [job_id] and not (report.resent or report.failed or report.cancelled)
    job = worker_db.job(job_id)
    # The attempt number moves on only when a worker claims it; progress so far is kept for the resume.
    assert (job.status, job.attempt, job.lease_owner, job.lease_expires_at, job.step) == (
        JobStatus.QUEUED, 1, None, None, 100)
    assert broker.drain() == [job_id]
    assert worker_db.job(live).status is JobStatus.RUNNING
    # Sent once: the next pass leaves it alone until it has waited a whole lease unclaimed.
    assert not reconcile(worker_db, broker) and broker.drain() == []


def test_an_orphan_with_a_pending_cancel_ends_cancelled(worker_db, broker):
    job_id = orphan(worker_db, cancel_requested=True)

    assert reconcile(worker_db, broker).cancelled == [job_id]

    job = worker_db.job(job_id)
    assert job.status is JobStatus.CANCELLED and job.finished_at is not None and job.lease_owner is None
    assert broker.drain() == []


def test_an_orphan_on_its_last_attempt_fails_with_the_reason(worker_db, broker):
    job_id = orphan(worker_db, attempt=3)

    assert reconcile(worker_db, broker, max_attempts=3).failed == [job_id]

    job = worker_db.job(job_id)
    assert (job.status, job.attempt) == (JobStatus.FAILED, 3)
    assert job.error == "gave up after 3 attempts (worker lost each time)"
    assert broker.drain() == []


def test_a_queued_job_nobody_took_for_a_lease_is_sent_again(worker_db, broker):
    lost = worker_db.add_job(tiny_spec(), updated_at=ago(LEASE + 1))  # e.g. the broker was down at submit
    fresh = worker_db.add_job(tiny_spec())
    cancelled = worker_db.add_job(tiny_spec(), status=JobStatus.CANCELLED, cancel_requested=True,
                                  updated_at=ago(LEASE + 1))
    done = worker_db.add_job(tiny_spec(), status=JobStatus.SUCCEEDED, updated_at=ago(LEASE + 1))

    report = reconcile(worker_db, broker)

    assert report.resent == [lost] and not report.requeued
    assert broker.drain() == [lost]
    # Its wait starts again (SQLite hands datetimes back without their UTC offset).
    assert worker_db.job(lost).updated_at.replace(tzinfo=None) > ago(LEASE).replace(tzinfo=None)
    assert [worker_db.job(j).status for j in (fresh, cancelled, done)] == [
        JobStatus.QUEUED, JobStatus.CANCELLED, JobStatus.SUCCEEDED]
    assert not reconcile(worker_db, broker)


def test_a_broker_that_refuses_leaves_the_jobs_for_the_next_pass(worker_db, broker):
    lost = worker_db.add_job(tiny_spec(), updated_at=ago(LEASE + 1))
    job_id = orphan(worker_db)
    down = Broker("redis://127.0.0.1:1/0")  # nothing listens on port 1: every send is refused

    report = reconcile(worker_db, down)

    assert (report.requeued, report.resent, sorted(report.unsent)) == ([], [], sorted([job_id, lost]))
    assert worker_db.job(job_id).status is JobStatus.QUEUED
    # Once the broker answers, the job that waited unsent goes out at once; the orphan, queued but unsent
    # while the broker was down, goes out once it has waited a lease unclaimed.
    assert reconcile(worker_db, broker).resent == [lost]
    set_job(worker_db, job_id, updated_at=ago(LEASE + 1))
    assert reconcile(worker_db, broker).resent == [job_id]
    assert broker.drain() == [lost, job_id]


def test_a_cancelled_job_is_never_brought_back(worker_db, broker):
    cancelled = worker_db.add_job(tiny_spec(), status=JobStatus.CANCELLED, cancel_requested=True, attempt=1,
                                  lease_expires_at=ago(100), updated_at=ago(100))
    set_job(worker_db, cancelled, lease_owner="dead:1:t")  # a stale lease left on a cancelled row is ignored

    for lease in (LEASE, 0.0):
        assert not reconcile(worker_db, broker, lease=lease)
    assert worker_db.job(cancelled).status is JobStatus.CANCELLED and broker.drain() == []


def test_the_orphaned_jobs_of_a_pack_go_back_as_one_pack(worker_db, broker):
    owner = worker_db.add_owner()
    pack = [orphan(worker_db, owner_id=owner, pack_id="s1-0") for _ in range(3)]
    stale = worker_db.add_job(tiny_spec(), owner_id=owner, pack_id="s1-1", updated_at=ago(LEASE + 1))
    alone = orphan(worker_db, owner_id=owner)

    report = reconcile_once(worker_db.sessions, lease_seconds=LEASE, max_attempts=3, enqueue=broker.send,
                            enqueue_pack=lambda ids, queue: enqueue_pack(broker.app, ids, queue))

    assert sorted(report.requeued) == sorted([*pack, alone]) and report.resent == [stale]
    messages = {(m.headers["task"], tuple(m.payload[0][0]) if isinstance(m.payload[0][0], list)
                 else m.payload[0][0]) for m in drain_queue(broker.url, "cpu")}
    # The pack's three jobs in one run_pack message; a job alone, or the only stale one of its pack, as run_job.
    assert messages == {("narrownet.run_pack", tuple(pack)), ("narrownet.run_job", alone),
                        ("narrownet.run_job", stale)}
