"""Live job events (GET /v1/jobs/{id}/events): server-sent `status` and `metrics` events as they are stored.

One poller per watched job, shared by every stream open on it, reads the job row and the metric points stored
since its previous read, each time in a short session of its own, and fans the result out to the streams. A
stream first catches up from the database (points after its Last-Event-ID), then follows the poller. So no
stream holds a database connection while it waits, and all reads of all streams together use at most
READ_CONCURRENCY connections at once, however many streams are open.

Metrics events carry `id: <step of their last point>`: a client that reconnects with Last-Event-ID gets the
points after it, so it misses nothing. Status events carry no id (the browser keeps the last metrics id). The
stream ends after the job's terminal status, once every point has been sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi.sse import format_sse_event
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import JobOut
from core.db.models import utcnow
from core.repositories import jobs as repo

log = logging.getLogger(__name__)

PAGE = 1000  # points per read and per metrics event
READ_CONCURRENCY = 4  # database reads in flight for all streams of one app together
QUEUE_SNAPSHOTS = 256  # a stream further behind than this catches up from the database instead
RETRY_MS = 1000  # how soon a browser reconnects after a dropped connection


@dataclass(frozen=True)
class Snapshot:
    """The job as GET /v1/jobs/{id} shows it, and points stored after some step, in step order."""

    job: JobOut
    points: list[tuple[int, dict[str, Any]]]

    @property
    def complete(self) -> bool:
        # The row is read before the points: a terminal row means every point is already stored.
        return self.job.status.is_terminal and len(self.points) < PAGE


@dataclass(eq=False)
class _Subscriber:
    queue: asyncio.Queue[Snapshot] = field(default_factory=lambda: asyncio.Queue(QUEUE_SNAPSHOTS))
    lagged: bool = False

    def offer(self, snapshot: Snapshot) -> None:
        try:
            self.queue.put_nowait(snapshot)
        except asyncio.QueueFull:
            self.lagged = True


@dataclass(eq=False)
class _Feed:
    subscribers: set[_Subscriber] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


def _status_key(job: JobOut) -> tuple[Any, ...]:
    # What a watcher sees change; the lease heartbeat alone (updated_at every second) is not news.
    return job.status, job.step, job.total_steps, job.attempt, job.cancel_requested, job.error


def _status_event(job: JobOut) -> bytes:
    return format_sse_event(event="status", data_str=job.model_dump_json())


def _metrics_event(points: list[tuple[int, dict[str, Any]]]) -> bytes:
    body = json.dumps({"points": [{"step": s, "values": v} for s, v in points]}, separators=(",", ":"))
    return format_sse_event(event="metrics", data_str=body, id=str(points[-1][0]))


class JobEventHub:
    """The pollers of one app; streams subscribe by job id (ownership is checked before, by the route)."""

    def __init__(self, sessions: sessionmaker[Session], *, poll_seconds: float, heartbeat_seconds: float) -> None:
        self.sessions = sessions
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._feeds: dict[str, _Feed] = {}
        self._reads = anyio.CapacityLimiter(READ_CONCURRENCY)

    @property
    def watched_jobs(self) -> int:
        return len(self._feeds)

    # ---------------------------------------------------------------------------------------- reads
    def _read_sync(self, job_id: str, after_step: int | None) -> Snapshot:
        with self.sessions() as session:
            job = repo.get(session, job_id)
            assert job is not None, f"job {job_id} vanished"  # jobs are never deleted
            out = JobOut.from_row(job, utcnow())
            # A reused sweep config's points are those of the job that trained it.
            points = repo.metric_points(session, job.reused_from or job_id, since_step=after_step, every=1,
                                        limit=PAGE)
        return Snapshot(out, list(points))

    async def _read(self, job_id: str, after_step: int | None) -> Snapshot:
        return await anyio.to_thread.run_sync(self._read_sync, job_id, after_step, limiter=self._reads)

    async def _last_step(self, job_id: str) -> int | None:
        def read() -> int | None:
            with self.sessions() as session:
                job = repo.get(session, job_id)
                return repo.last_metric_step(session, job.reused_from if job and job.reused_from else job_id)

        return await anyio.to_thread.run_sync(read, limiter=self._reads)

    # -------------------------------------------------------------------------------------- poller
    async def _poll(self, job_id: str, feed: _Feed) -> None:
        cursor: int | None = None
        started = False
        news: tuple[Any, ...] | None = None
        while feed.subscribers:
            try:
                if not started:
                    # Streams catch up on their own; the poller only brings what is stored from now on.
                    cursor, started = await self._last_step(job_id), True
                snapshot = await self._read(job_id, cursor)
            except Exception:  # the database is down: say so, keep the streams open, try again
                log.warning("event feed of job %s: read failed; retrying", job_id, exc_info=True)
                await asyncio.sleep(self.poll_seconds)
                continue
            if snapshot.points:
                cursor = snapshot.points[-1][0]
            if snapshot.points or _status_key(snapshot.job) != news:  # only news goes out
                news = _status_key(snapshot.job)
                for subscriber in list(feed.subscribers):
                    subscriber.offer(snapshot)
            if snapshot.complete:
                return
            if len(snapshot.points) < PAGE:  # a full page: more is waiting, read on at once
                await asyncio.sleep(self.poll_seconds)

    def _subscribe(self, job_id: str) -> tuple[_Feed, _Subscriber]:
        feed = self._feeds.setdefault(job_id, _Feed())
        subscriber = _Subscriber()
        feed.subscribers.add(subscriber)
        if feed.task is None or feed.task.done():
            feed.task = asyncio.get_running_loop().create_task(self._poll(job_id, feed),
                                                               name=f"job-events-{job_id}")
        return feed, subscriber

    def _unsubscribe(self, job_id: str, feed: _Feed, subscriber: _Subscriber) -> None:
        feed.subscribers.discard(subscriber)
        if not feed.subscribers:
            if feed.task is not None:
                feed.task.cancel()
            if self._feeds.get(job_id) is feed:
                del self._feeds[job_id]

    # -------------------------------------------------------------------------------------- stream
    async def stream(self, job_id: str, after_step: int | None) -> AsyncIterator[bytes]:
        """The SSE bytes for one client: catch up after `after_step`, then follow until the job ends."""
        feed, subscriber = self._subscribe(job_id)
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            last_step, shown, shown_at = after_step, None, None
            while True:
                # Catch up from the database: first, and whenever this stream fell too far behind. What was
                # queued before the read is in the read; what is queued after it is filtered by step below.
                subscriber.lagged = False
                while not subscriber.queue.empty():
                    subscriber.queue.get_nowait()
                while True:
                    snapshot = await self._read(job_id, last_step)
                    if snapshot.points:
                        last_step = snapshot.points[-1][0]
                        yield _metrics_event(snapshot.points)
                    if len(snapshot.points) < PAGE:
                        break
                # Follow the poller; a comment line keeps an idle connection (and any proxy on the way) open.
                sent = time.monotonic()
                while not subscriber.lagged:
                    # A poller read older than the status already shown must not move it back.
                    fresh = shown_at is None or snapshot.job.updated_at >= shown_at
                    if fresh and _status_key(snapshot.job) != shown:
                        shown, shown_at = _status_key(snapshot.job), snapshot.job.updated_at
                        yield _status_event(snapshot.job)
                        sent = time.monotonic()
                    if snapshot.complete:
                        return
                    try:
                        wait = max(0.0, sent + self.heartbeat_seconds - time.monotonic())
                        snapshot = await asyncio.wait_for(subscriber.queue.get(), wait)
                    except TimeoutError:
                        yield b": heartbeat\n\n"
                        sent = time.monotonic()
                        continue
                    points = [p for p in snapshot.points if last_step is None or p[0] > last_step]
                    if points:
                        last_step = points[-1][0]
                        yield _metrics_event(points)
                        sent = time.monotonic()
        finally:
            self._unsubscribe(job_id, feed, subscriber)
