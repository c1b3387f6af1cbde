"""JobProgress (the trainer callbacks of a worker run) writing to a real database through a claimed JobStore."""

from __future__ import annotations

from sqlalchemy import func, select, update

from core.db.models import Job, MetricPoint
from core.repositories import jobs as jobs_repo
from tests.worker.conftest import WorkerDb, tiny_spec
from worker.progress import JobProgress


def claimed_progress(db: WorkerDb, **timing: float) -> tuple[str, JobProgress]:
    job_id = db.add_job(tiny_spec())
    with db.sessions.begin() as s:
        job = jobs_repo.claim(s, job_id, worker_id="w", lease_seconds=30.0, max_attempts=3)
    return job_id, JobProgress(db.job_store(job), flush_every=3, total_steps=200, **timing)


def stored_steps(db: WorkerDb, job_id: str) -> list[int]:
    with db.sessions() as s:
        return list(s.scalars(select(MetricPoint.step).where(MetricPoint.job_id == job_id)
                              .order_by(MetricPoint.step)))


def test_metrics_are_written_in_batches(worker_db):
    job_id, progress = claimed_progress(worker_db, heartbeat_seconds=3600.0)

    progress.on_metrics(0, {"train_loss": 1.0})
    progress.on_metrics(10, {"train_loss": 0.9})
    assert stored_steps(worker_db, job_id) == []
    progress.on_metrics(20, {"train_loss": 0.8})

    assert stored_steps(worker_db, job_id) == [0, 10, 20]
    job = worker_db.job(job_id)
    assert (job.step, job.total_steps, job.latest_metrics) == (20, 200, {"train_loss": 0.8})


def test_a_slow_job_shows_progress_before_its_batch_fills_and_sees_a_cancel(worker_db):
    job_id, progress = claimed_progress(worker_db, heartbeat_seconds=0.0, flush_seconds=0.0)
    progress.on_metrics(0, {"train_loss": 1.0})

    assert progress.should_stop() is False
    assert stored_steps(worker_db, job_id) == [0]

    with worker_db.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    assert progress.should_stop() is True
    with worker_db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(MetricPoint).where(MetricPoint.job_id == job_id)) == 1
