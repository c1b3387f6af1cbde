"""The worker's Celery app (`celery -A worker.celery_app:celery_app worker`), configured from the settings.

Configuration and queue names come from core.queue, which the API uses to send; this module adds only the
task module the worker serves.
"""

from __future__ import annotations

from core.queue import make_celery
from core.settings import get_settings

celery_app = make_celery(get_settings().resolved_broker_url, include=["worker.tasks"])
