"""Group commit: writes that arrive while a transaction is in flight go together in the next one.

A plain submission's transaction cost the API ~460 us of Python however small it was: the pool's checkout and
return, the driver's query and its waits on the socket, the results (bench/RESULTS.md). Under load, requests
queue for it anyway. Here the event loop keeps one transaction of them in flight at a time; what arrives
meanwhile waits and goes in the next, up to MAX_BATCH together. Alone, a write goes at once, in a transaction of
one, as before.

What one write sees is what it would see alone: `commit(batch)` runs the batch in one transaction, in order, and
answers each write (api/services/job_writes.py: each insert counts the owner's queued jobs after the inserts
before it in the batch). A batch that fails is run again one write at a time, so that each gets its own answer: an
error one of them caused fails only that one. An error that every write would meet again (the database is gone)
fails each of them at once.
A caller that is cancelled does not cancel its write: it goes with its batch, and `commit` decides what happens
after (the submissions are sent to their queues from there, whether or not their clients waited).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")

# Writes per transaction: bounds one query string and the wait of the first write in it.
MAX_BATCH = 32


@dataclass
class _Waiting(Generic[In, Out]):
    writes: list[tuple[In, asyncio.Future[Out]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class GroupCommit(Generic[In, Out]):
    def __init__(self, commit: Callable[[Sequence[In]], Awaitable[Sequence[Out]]], *,
                 max_batch: int = MAX_BATCH, observe: Callable[[int], None] = lambda size: None,
                 one_may_cause: Callable[[Exception], bool] = lambda error: True) -> None:
        """`commit(batch)` writes a batch in one transaction and answers each of its writes, in order;
        `observe(size)` hears of each transaction's number of writes before it starts. A group that fails with an
        error for which `one_may_cause(error)` is false (every write would meet it again: the database is gone)
        fails each of its writes at once instead of being written one by one."""
        self._commit = commit
        self._one_may_cause = one_may_cause
        self._observe = observe
        self._max_batch = max_batch
        # Per event loop: futures and tasks belong to the loop they were made on.
        self._loops: dict[asyncio.AbstractEventLoop, _Waiting[In, Out]] = {}

    async def write(self, item: In) -> Out:
        """`item` written with the others that wait for the same transaction; its answer, or its error."""
        loop = asyncio.get_running_loop()
        waiting = self._loops.setdefault(loop, _Waiting())
        done: asyncio.Future[Out] = loop.create_future()
        waiting.writes.append((item, done))
        if waiting.task is None:
            waiting.task = loop.create_task(self._drain(loop, waiting))
        return await asyncio.shield(done)

    async def wait_idle(self) -> None:
        """Return once no write of this event loop is waiting or in flight (for shutdown)."""
        waiting = self._loops.get(asyncio.get_running_loop())
        if waiting is not None and waiting.task is not None:
            await asyncio.shield(waiting.task)

    async def _drain(self, loop: asyncio.AbstractEventLoop, waiting: _Waiting[In, Out]) -> None:
        batch: list[tuple[In, asyncio.Future[Out]]] = []
        try:
            while waiting.writes:
                batch = waiting.writes[:self._max_batch]
                del waiting.writes[:self._max_batch]
                await self._run(batch)
        except BaseException:
            # Cancelled (the loop is closing): nobody is left waiting for an answer that will not come.
            for _, done in [*batch, *waiting.writes]:
                if not done.done():
                    done.set_exception(RuntimeError("the write was not made: the server is shutting down"))
            waiting.writes.clear()
            raise
        finally:
            # No await since the loop's test: a write that arrives from now on starts a task of its own.
            waiting.task = None
            if not waiting.writes:
                self._loops.pop(loop, None)

    async def _run(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        self._observe(len(batch))
        try:
            answers = list(await self._commit([item for item, _ in batch]))
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers to {len(batch)} writes")
        except Exception as exc:  # noqa: BLE001 - each write gets its own answer below
            if len(batch) == 1 or not self._one_may_cause(exc):
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                return
            log.info("a group of %d writes failed (%s: %s); writing each alone", len(batch), type(exc).__name__, exc)
            for one in batch:
                await self._run([one])
            return
        for (_, done), answer in zip(batch, answers, strict=True):
            if not done.done():
                done.set_result(answer)
