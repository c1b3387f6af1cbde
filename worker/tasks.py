"""Celery tasks: thin shells over functions that tests call directly."""

from __future__ import annotations

import logging
import os
import socket

import torch
from celery import Task
from celery.signals import after_setup_logger, worker_init, worker_process_init

from core.artifacts.store import get_artifact_store
from core.db.session import name_connections
from core.queue import PACK_TASK_NAME, TASK_NAME
from core.settings import get_settings
from worker.celery_app import celery_app
from worker.pack_runner import run_pack
from worker.runner import run_job

log = logging.getLogger(__name__)

_pool_size = 1  # set in the worker's main process, inherited by the pool children it forks
# Set in each pool process: the most torch threads one of its jobs may use, when the settings leave the count to
# us (a small job takes 1: worker/runner.py use_job_threads); None when worker_torch_threads fixes it.
_job_thread_cap: int | None = None


def torch_threads(configured: int | None, pool_size: int, cores: int | None) -> int:
    """Intra-op threads for one pool process: the setting, else the cores shared out among the pool."""
    return configured or max(1, (cores or 1) // max(1, pool_size))


@after_setup_logger.connect
def _quiet_task_trace(**_: object) -> None:
    # Celery's own line ("Task narrownet.run_job[<celery id>] succeeded in 0.5s: None") names neither the job nor
    # its outcome; the runner logs "job <id> attempt <n>: <outcome>" instead.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)


@worker_init.connect
def _remember_pool_size(sender: object, **_: object) -> None:
    name_connections("narrownet-worker")  # a solo or threaded pool runs jobs in this process
    global _pool_size
    concurrency = getattr(sender, "concurrency", 1)
    _pool_size = concurrency if isinstance(concurrency, int) else 1


@worker_process_init.connect
def _init_pool_process(**_: object) -> None:
    # A forked pool child must not share the parent's database connections, nor its HTTP pool to the store.
    name_connections("narrownet-worker")  # drops the inherited engine as well
    get_artifact_store.cache_clear()
    global _job_thread_cap
    # torch would start one thread per core in every pool process: N processes on N cores oversubscribe.
    configured = get_settings().worker_torch_threads
    threads = torch_threads(configured, _pool_size, len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)
    _job_thread_cap = None if configured else threads
    log.info("pool process %d: torch uses %d threads (pool of %d)", os.getpid(), torch.get_num_threads(),
             _pool_size)


@celery_app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job_task(self: Task, job_id: str) -> str | None:
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{self.request.id}"
    status = run_job(job_id, worker_id=worker_id, thread_cap=_job_thread_cap)
    return None if status is None else status.value


@celery_app.task(name=PACK_TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_pack_task(self: Task, job_ids: list[str]) -> dict[str, str | None]:
    if not isinstance(job_ids, list) or not all(isinstance(i, str) for i in job_ids):
        log.error("run_pack: expected a list of job ids, got %r; ignored", job_ids)
        return {}
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{self.request.id}"
    statuses = run_pack(job_ids, worker_id=worker_id, thread_cap=_job_thread_cap)
    return {job_id: None if status is None else status.value for job_id, status in statuses.items()}
