"""Sending a job to a queue. Call only after the transaction that created the job has committed."""

from __future__ import annotations

from worker.celery_app import QUEUES, celery_app

TASK_NAME = "narrownet.run_job"


def enqueue_job(job_id: str, queue: str) -> None:
    if queue not in QUEUES:
        raise ValueError(f"queue: unknown queue {queue!r}, expected one of {QUEUES}")
    celery_app.send_task(TASK_NAME, args=[job_id], queue=queue)
