"""What one app instance holds: settings, database engine, Celery app, artifact store, rate limiter, metrics,
the dashboard's cookie signer and the live event feeds.

Built by create_app from the settings it is given (tests pass their own), so nothing here reads
process-global configuration. Making the engine does not connect; the first request does.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, sessionmaker

from api.errors import DatabaseBusy
from api.grouping import Grouped
from api.observability import ApiMetrics
from api.ratelimit import Limiter, RedisRateLimiter, make_limiter
from api.sender import Sender
from api.services import job_reads, job_writes
from api.services.job_events import JobEventHub
from api.services.key_revocations import RedisMark, RevocationMark, revocation_mark
from api.services.keys import KeyCache
from api.services.page_cache import PageCache
from api.services.signin import SessionCookies, load_or_create_secret
from core.artifacts.store import ArtifactStore, store_for
from core.db.session import make_engine, make_loop_engine
from core.queue import enqueue_job, enqueue_jobs, enqueue_pack, make_celery
from core.settings import Settings

log = logging.getLogger(__name__)

# Under load a request's pooled connection was in use milliseconds ago: checking it first was a round trip per
# request (~6% of a GET's CPU). One idle this long is checked, as before.
PING_AFTER_IDLE_SECONDS = 1.0
T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    read_engine: AsyncEngine | None  # PostgreSQL: the hottest reads, on the event loop (api/services/job_reads.py)
    write_engine: AsyncEngine | None  # PostgreSQL: plain submissions, on the event loop (api/services/job_writes.py)
    celery: Celery
    artifacts: ArtifactStore
    limiter: Limiter
    key_cache: KeyCache
    revocations: RevocationMark | None
    turns: anyio.Semaphore
    cookies: SessionCookies
    events: JobEventHub
    sender: Sender  # new jobs to the broker, from the event loop (api/sender.py)
    pages: PageCache  # GET /v1/jobs pages, kept for a moment (api/services/page_cache.py)
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    # PostgreSQL: plain submissions committed together, and status polls read together, when they arrive together
    # (api/grouping.py; api/services/job_writes.py, api/services/job_reads.py)
    plain_writes: Grouped[dict[str, Any], dict[str, Any] | None] | None = None
    job_reads: Grouped[tuple[str, str], dict[str, Any] | None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        busy_timeout = settings.database_busy_timeout_seconds
        # A connection for every request's turn, and spares for the readiness probe and the event pollers.
        engine = make_engine(settings.resolved_database_url, busy_timeout=busy_timeout,
                             pool_size=settings.api_db_concurrency + 4,
                             ping_after_idle_seconds=PING_AFTER_IDLE_SECONDS,
                             # No request waits longer for a row lock than for the database as a whole.
                             lock_timeout_seconds=busy_timeout, application_name="narrownet-api")
        sessions = sessionmaker(bind=engine, expire_on_commit=False)
        read_engine = make_loop_engine(settings.resolved_database_url, busy_timeout=busy_timeout,
                                       pool_size=settings.api_db_concurrency,
                                       ping_after_idle_seconds=PING_AFTER_IDLE_SECONDS,
                                       application_name="narrownet-api-reads")
        write_engine = make_loop_engine(settings.resolved_database_url, busy_timeout=busy_timeout,
                                        pool_size=settings.api_db_concurrency,
                                        ping_after_idle_seconds=PING_AFTER_IDLE_SECONDS, read_only=False,
                                        lock_timeout_seconds=busy_timeout, application_name="narrownet-api-writes")

        def secret() -> str:
            if settings.session_secret is not None:
                return settings.session_secret.get_secret_value()
            return load_or_create_secret(settings.session_secret_file)

        celery = make_celery(settings.resolved_broker_url, busy_timeout=busy_timeout)
        metrics = ApiMetrics()
        runtime = cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            read_engine=read_engine,
            write_engine=write_engine,
            celery=celery,
            artifacts=store_for(settings),
            limiter=make_limiter(settings),
            key_cache=KeyCache(settings.api_key_cache_seconds),
            revocations=revocation_mark(settings),
            turns=anyio.Semaphore(settings.api_db_concurrency),
            cookies=SessionCookies(secret, settings.session_max_age_seconds),
            events=JobEventHub(sessions, poll_seconds=settings.events_poll_seconds,
                               heartbeat_seconds=settings.events_heartbeat_seconds),
            sender=Sender(lambda jobs: enqueue_jobs(celery, jobs),
                          on_failure=lambda queue: metrics.enqueue_failures.labels(queue).inc()),
            pages=PageCache(settings.api_list_cache_seconds, settings.api_list_cache_rows),
            metrics=metrics,
        )
        if write_engine is not None:
            runtime.plain_writes = Grouped(functools.partial(job_writes.commit_plain, runtime),
                                           observe=metrics.submissions_per_transaction.observe,
                                           one_may_cause=job_writes.one_may_cause)
        if read_engine is not None:
            # A read fails for a reason each poll in its group would meet again.
            runtime.job_reads = Grouped(functools.partial(job_reads.read_jobs, runtime),
                                        observe=metrics.polls_per_read.observe, one_may_cause=lambda error: False)
        return runtime

    @asynccontextmanager
    async def database_turn(self) -> AsyncIterator[None]:
        """One of api_db_concurrency turns at the database, waited for at most database_busy_timeout_seconds."""
        try:
            self.turns.acquire_nowait()  # the usual case; a deadline (a cancel scope) only for a wait
        except anyio.WouldBlock:
            try:
                with anyio.fail_after(self.settings.database_busy_timeout_seconds):
                    await self.turns.acquire()
            except TimeoutError:
                raise DatabaseBusy() from None
        try:
            yield
        finally:
            self.turns.release()

    async def in_own_session(self, read: Callable[[Session], T]) -> T:
        """`read` on a session of its own, in a worker thread, then the session closed (nothing committed). Takes no
        turn at the database: callers that need one hold it (turns are not reentrant)."""
        def run() -> T:
            with self.sessions() as session:
                return read(session)

        return await anyio.to_thread.run_sync(run)

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

    async def send(self, job_id: str, queue: str) -> None:
        """Runtime.enqueue for the event loop: the job goes out from the sender's thread, in one round trip with
        the others sent meanwhile (api/sender.py). Returns once it was sent or its failure counted."""
        await self.send_all([(job_id, queue)])

    async def send_all(self, jobs: Sequence[tuple[str, str]]) -> None:
        """Runtime.send for each (job id, queue), together."""
        for _, queue in jobs:
            self.metrics.jobs_submitted.labels(queue).inc()
        await self.sender.send_all(jobs)

    def enqueue_pack(self, job_ids: Sequence[str], queue: str) -> None:
        """Count a sweep's pack and send it (one narrownet.run_pack message) once its rows have committed; a
        broker that cannot be reached leaves the jobs queued for the reconciler, as for a job."""
        self.metrics.jobs_submitted.labels(queue).inc(len(job_ids))
        try:
            enqueue_pack(self.celery, job_ids, queue)
        except Exception:
            self.metrics.enqueue_failures.labels(queue).inc()
            log.exception("pack of %d jobs committed but not sent to queue %s", len(job_ids), queue)

    async def admit(self, key_id: str, *, read_mark: bool) -> tuple[float | None, str | None]:
        """Count a request of `key_id` with the rate limiter -> (seconds until it may retry or None, the key
        revocation mark when asked for, else None). With both in the same Redis, that is one round trip."""
        mark = self.revocations
        if read_mark and isinstance(mark, RedisMark) and isinstance(self.limiter, RedisRateLimiter) \
                and mark.url == self.limiter.url:
            return await self.limiter.ahit_reading(key_id, mark.KEY)
        retry_after = await self.limiter.ahit(key_id)
        return retry_after, (await self.read_mark() if read_mark else None)

    async def read_mark(self) -> str | None:
        return None if self.revocations is None else await self.revocations.read()

    async def aclose(self) -> None:
        """What close() cannot: the clients bound to the event loop."""
        for grouped in (self.plain_writes, self.job_reads):
            if grouped is not None:
                await grouped.wait_idle()
        for engine in (self.read_engine, self.write_engine):
            if engine is not None:
                await engine.dispose()
        await self.limiter.aclose()
        if self.revocations is not None:
            await self.revocations.aclose()

    def close(self) -> None:
        self.sender.close()
        self.engine.dispose()
        self.celery.close()
        self.limiter.close()
