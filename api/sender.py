"""Sending new jobs to the broker from one thread, several messages per round trip.

kombu's send blocks, so an async endpoint had to take a trip to a worker thread for each job it sent, and each
send built its own Redis client and made its own round trip (~360 us of CPU per message, bench/RESULTS.md). Here
the event loop hands (job id, queue) to one thread of the sender's own and waits for the answer; the thread takes
whatever has piled up while it was busy and sends it as one kombu publish batch (core.queue.enqueue_jobs). Under
load that is several jobs a round trip; alone, one.

The guarantees are Runtime.enqueue's: a job is sent only after its row has committed, and `send` returns once its
message went out or the failure was counted and logged (the job stays queued in the database, where the
reconciler finds it and sends it again). A failed batch counts every job in it as failed: any may be unsent, and
a message sent twice is harmless (the claim lets one attempt run).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Jobs per batch: bounds one pipeline (and the wait of the first job in it).
MAX_BATCH = 64
Send = Callable[[Sequence[tuple[str, str]]], None]


@dataclass(frozen=True)
class _Job:
    id: str
    queue: str
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]


class Sender:
    def __init__(self, send: Send, on_failure: Callable[[str], None]) -> None:
        """`send` sends a batch of (job id, queue) (core.queue.enqueue_jobs); `on_failure(queue)` counts one job
        of `queue` that it may not have sent."""
        self._send = send
        self._on_failure = on_failure
        self._waiting: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    async def send(self, job_id: str, queue_name: str) -> None:
        """Send one job and return once it went out or its failure was counted. A cancelled caller does not
        cancel the send."""
        await self.send_all([(job_id, queue_name)])

    async def send_all(self, jobs: Sequence[tuple[str, str]]) -> None:
        """Send each (job id, queue), as `send` does, and return once all went out or their failures were
        counted."""
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        self._start()
        for job_id, queue_name in jobs:
            done: asyncio.Future[None] = loop.create_future()
            self._waiting.put(_Job(job_id, queue_name, loop, done))
            waits.append(done)
        if len(waits) == 1:
            await asyncio.shield(waits[0])
        elif waits:
            await asyncio.shield(asyncio.gather(*waits))

    def close(self, timeout: float = 10.0) -> None:
        """Send what is waiting, then stop the thread."""
        with self._starting:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._waiting.put(None)
            thread.join(timeout)

    def _start(self) -> None:
        if self._thread is None:
            with self._starting:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="narrownet-sender", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._waiting.get()
            batch = [first] if first is not None else []
            stop = first is None
            while not stop and len(batch) < MAX_BATCH:
                try:
                    job = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                else:
                    batch.append(job)
            if batch:
                self._send_batch(batch)
            if stop:
                return

    def _send_batch(self, batch: list[_Job]) -> None:
        try:
            self._send([(job.id, job.queue) for job in batch])
        except Exception:
            log.exception("%d committed jobs may not have been sent (%s); the reconciler will send them again",
                          len(batch), ", ".join(job.id for job in batch))
            for job in batch:
                self._on_failure(job.queue)
        finally:
            # One wake-up per event loop, not per job: each call_soon_threadsafe writes to the loop's self-pipe.
            waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for job in batch:
                waiting.setdefault(job.loop, []).append(job.done)
            for loop, futures in waiting.items():
                try:
                    loop.call_soon_threadsafe(_finish, futures)
                except RuntimeError:  # its event loop has closed: nobody waits for the answer
                    pass


def _finish(futures: list[asyncio.Future[None]]) -> None:
    for done in futures:
        if not done.done():
            done.set_result(None)
