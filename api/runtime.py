"""What one app instance holds: its settings, database engine, Celery app, artifact store, rate limiter and
metrics.

Built by create_app from the settings it is given (tests pass their own), so nothing here reads
process-global configuration. Making the engine does not connect; the first request does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.observability import ApiMetrics
from api.ratelimit import Limiter, make_limiter
from core.artifacts.store import ArtifactStore, store_for
from core.db.session import make_engine
from core.queue import enqueue_job, make_celery
from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    celery: Celery
    artifacts: ArtifactStore
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
            artifacts=store_for(settings),
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

    def close(self) -> None:
        self.engine.dispose()
        self.celery.close()
        self.limiter.close()
