"""The Celery app, configured from the one settings object. Must stay light: no torch import here.

The API imports this (via worker.queueing) to send tasks, so importing it must not pull in the trainer.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from narrownet.settings import get_settings

QUEUES = ("cpu", "gpu")


def _transport_options(broker_url: str) -> dict[str, object]:
    if broker_url.startswith("sqla+sqlite"):
        # kombu hands these to create_engine: the API and the worker share one SQLite file, so wait for its
        # lock rather than fail with "database is locked".
        return {"connect_args": {"timeout": 30}}
    if broker_url.startswith(("redis://", "rediss://")):
        return {"socket_connect_timeout": 5}
    return {}


def make_celery(broker_url: str) -> Celery:
    app = Celery("narrownet", broker=broker_url, include=["worker.tasks"])
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
        broker_transport_options=_transport_options(broker_url),
        worker_send_task_events=False,
    )
    return app


celery_app = make_celery(get_settings().resolved_broker_url)
