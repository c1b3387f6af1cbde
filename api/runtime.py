"""What one app instance holds: its settings, database engine, Celery app, rate limiter and metrics.

Built by create_app from the settings it is given (tests pass their own), so nothing here reads
process-global configuration. Making the engine does not connect; the first request does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.observability import ApiMetrics
from api.ratelimit import Limiter, make_limiter
from core.db.session import make_engine
from core.queue import enqueue_job, enqueue_pack, make_celery
from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    celery: Celery
    limiter: Limiter
    metrics: ApiMetrics = field(default_factory=ApiMetrics)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.resolved_database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessionmaker(bind=engine, expire_on_commit=False),
            celery=make_celery(settings.resolved_broker_url),
            limiter=make_limiter(settings),
        )

    def enqueue(self, job_id: str, queue: str) -> None:
        """Count a new job and send it to its queue. Called only after the job's row has committed.

        A broker that cannot be reached leaves the job queued in the database (the source of truth) for
        the reconciler to send again; the request that created it has already succeeded.
        """
        self.metrics.jobs_submitted.labels(queue).inc()
        try:
            enqueue_job(self.celery, job_id, queue)
        except Exception:
            self.metrics.enqueue_failures.labels(queue).inc()
            log.exception("job %s committed but not sent to queue %s", job_id, queue)

    def enqueue_pack(self, job_ids: Sequence[str], queue: str) -> None:
        """Count a sweep's pack and send it (one narrownet.run_pack message) once its rows have committed; a
        broker that cannot be reached leaves the jobs queued for the reconciler, as for a job."""
        self.metrics.jobs_submitted.labels(queue).inc(len(job_ids))
        try:
            enqueue_pack(self.celery, job_ids, queue)
        except Exception:
            self.metrics.enqueue_failures.labels(queue).inc()
            log.exception("pack of %d jobs committed but not sent to queue %s", len(job_ids), queue)

    def close(self) -> None:
        self.engine.dispose()
        self.celery.close()
        self.limiter.close()
