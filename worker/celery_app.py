"""The worker's Celery app (`celery -A worker.celery_app:celery_app worker`), configured from the settings.

Configuration and queue names come from core.queue, which the API uses to send; this module adds only the
task module the worker serves, and how an idle worker polls the embedded (SQLite) broker.
"""

from __future__ import annotations

from core.queue import make_celery
from core.settings import get_settings
from worker import sql_broker

# kombu's SQL transport (the embedded broker) is polled; the worker polls it adaptively (worker/sql_broker.py):
# at once after a job, backing off to about once a second when idle. Only this process (a worker) polls.
sql_broker.install()

_settings = get_settings()
celery_app = make_celery(_settings.resolved_broker_url, include=["worker.tasks"],
                         busy_timeout=_settings.database_busy_timeout_seconds)
