"""The worker's Celery app (`celery -A worker.celery_app:celery_app worker`), configured from the settings.

Configuration and queue names come from core.queue, which the API uses to send; this module adds only the
task module the worker serves, and how often an idle worker polls the embedded (SQLite) broker.
"""

from __future__ import annotations

from kombu.transport import sqlalchemy as kombu_sql

from core.queue import make_celery
from core.settings import get_settings

# kombu's SQL transport is polled, by default once a second, and a worker that has just acknowledged a
# job waits for the next poll: one job a second at most, however short the jobs. Its transport options all
# go to create_engine, so the interval is set on the class (this process is a worker; nothing else polls).
SQL_BROKER_POLL_SECONDS = 0.2
kombu_sql.Transport.polling_interval = SQL_BROKER_POLL_SECONDS

_settings = get_settings()
celery_app = make_celery(_settings.resolved_broker_url, include=["worker.tasks"],
                         busy_timeout=_settings.database_busy_timeout_seconds)
