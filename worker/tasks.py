"""Celery tasks: thin shells over functions that tests call directly."""

from __future__ import annotations

import os
import socket

from celery import Task
from celery.signals import worker_process_init

from api.db.session import get_engine, get_sessionmaker
from worker.celery_app import celery_app
from worker.queueing import TASK_NAME
from worker.runner import run_job


@worker_process_init.connect
def _fresh_engine_per_child(**_: object) -> None:
    # A forked pool child must not share the parent's database connections.
    get_sessionmaker.cache_clear()
    get_engine.cache_clear()


@celery_app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job_task(self: Task, job_id: str) -> str | None:
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{self.request.id}"
    status = run_job(job_id, worker_id=worker_id)
    return None if status is None else status.value
