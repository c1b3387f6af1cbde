"""Sending a job to a queue. Call only after the transaction that created the job has committed."""

from __future__ import annotations

from celery import Celery

from worker.celery_app import QUEUES, celery_app

TASK_NAME = "narrownet.run_job"


def enqueue_job(job_id: str, queue: str, *, app: Celery | None = None) -> None:
    """Send narrownet.run_job(job_id) to `queue` (on `app`, default the settings-configured Celery app)."""
    if queue not in QUEUES:
        raise ValueError(f"queue: unknown queue {queue!r}, expected one of {QUEUES}")
    (app or celery_app).send_task(TASK_NAME, args=[job_id], queue=queue)
