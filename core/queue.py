"""The queue producer: the task's name, the queues, the Celery configuration both sides use, and `enqueue`.

The API and the reconciler send jobs (and packs of a sweep's jobs) with an app built by `make_celery`; the worker
consumes with one built the same way (worker/celery_app.py). Nothing here imports the worker or torch. Send a job
only after the transaction that created (or re-queued) it has committed: a task that arrives first finds no row
to run.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu.entity import Exchange, Queue

from core import broker_wake
from core.db import sqlite
from core.ids import is_plain_id
from trainer.spec import JobSpec

TASK_NAME = "narrownet.run_job"
# A pack: several jobs (configs of one sweep) that train together as one vectorized program; args: [job ids].
PACK_TASK_NAME = "narrownet.run_pack"
QUEUES = ("cpu", "gpu")


def queue_for(spec: JobSpec) -> str:
    """The queue a job goes to: "gpu" for CUDA (and for ResNet-18 on "auto"), else "cpu"."""
    if spec.device == "cuda":
        return "gpu"
    if spec.device == "cpu":
        return "cpu"
    return "gpu" if spec.model.arch == "resnet18" else "cpu"


def _transport_options(broker_url: str, busy_timeout: float) -> dict[str, object]:
    if broker_url.startswith("sqla+sqlite"):
        # kombu hands these to create_engine. The API, the worker and the reconciler share one SQLite file:
        # WAL, BEGIN IMMEDIATE behind a per-process lock, and a bounded wait for the lock, as for our own
        # database (core/db/sqlite.py); a send that still cannot get in fails, and the reconciler sends again.
        return {"connect_args": sqlite.connect_args(busy_timeout), "pool_timeout": busy_timeout}
    if broker_url.startswith(("redis://", "rediss://")):
        return {"socket_connect_timeout": 5}
    return {}


def make_celery(broker_url: str, *, include: Sequence[str] = (),
                busy_timeout: float = sqlite.DEFAULT_BUSY_TIMEOUT_SECONDS) -> Celery:
    """A Celery app on `broker_url`; the worker passes the task modules it serves in `include`."""
    app = Celery("narrownet", broker=broker_url, include=list(include))
    app.conf.update(
        # The job row is the source of truth and carries outcomes; no result backend is needed.
        task_ignore_result=True,
        # A long training task is acknowledged only when it finishes; a worker that dies mid-run leaves the
        # message to be redelivered, and the job's lease decides who may pick it up again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A broker outage must not stop training: the job row's lease, not the broker, decides who runs a
        # job, so a task whose message can no longer be acknowledged keeps running and finishes the job.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # Each queue on its own direct exchange and routing key (Celery's default binds both to exchange "cpu"
        # with key "cpu"), so where a job lands never depends on how a task was sent.
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_default_queue="cpu",
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # Bounded broker I/O: a send that cannot reach the broker fails instead of hanging a request.
        broker_connection_timeout=5,
        broker_transport_options=_transport_options(broker_url, busy_timeout),
        worker_send_task_events=False,
    )
    return app


def enqueue_job(app: Celery, job_id: str, queue: str) -> None:
    """Send narrownet.run_job(job_id) to `queue` on `app`."""
    if queue not in QUEUES:
        raise ValueError(f"queue: unknown queue {queue!r}, expected one of {QUEUES}")
    app.send_task(TASK_NAME, args=[job_id], queue=queue)
    broker_wake.wake(str(app.conf.broker_url))


def _args_repr(job_id: str) -> str | None:
    """saferepr([job_id]) for an id of plain characters (every id the service makes); None lets Celery make it."""
    return f"['{job_id}']" if is_plain_id(job_id) else None


def enqueue_jobs(app: Celery, jobs: Sequence[tuple[str, str]]) -> None:
    """Send narrownet.run_job for each (job id, queue), the same messages enqueue_job sends, in one round trip where
    the broker allows (kombu's publish batch: one Redis pipeline). An error means any of them may be unsent."""
    for _, queue in jobs:
        if queue not in QUEUES:
            raise ValueError(f"queue: unknown queue {queue!r}, expected one of {QUEUES}")
    with app.producer_or_acquire() as producer, producer.batch():
        # Each queue (its exchange and binding) is declared once per batch rather than once per message, and an
        # id's args repr is spelled here as Celery's saferepr spells it: the same messages, less work per job.
        for queue in dict.fromkeys(queue for _, queue in jobs):
            producer.maybe_declare(app.amqp.queues[queue])
        for job_id, queue in jobs:
            app.send_task(TASK_NAME, args=[job_id], queue=queue, producer=producer, declare=[],
                          argsrepr=_args_repr(job_id), kwargsrepr="{}")
    broker_wake.wake(str(app.conf.broker_url))


def enqueue_pack(app: Celery, job_ids: Sequence[str], queue: str) -> None:
    """Send narrownet.run_pack(job_ids) to `queue`; a pack of one is sent as narrownet.run_job."""
    if queue not in QUEUES:
        raise ValueError(f"queue: unknown queue {queue!r}, expected one of {QUEUES}")
    if len(job_ids) == 1:
        app.send_task(TASK_NAME, args=[job_ids[0]], queue=queue)
    else:
        app.send_task(PACK_TASK_NAME, args=[list(job_ids)], queue=queue)
    broker_wake.wake(str(app.conf.broker_url))
