"""Requests that arrive while a round trip to the database is in flight go together in the next one: group commit
for the plain submissions (api/services/job_writes.py), grouped reads for the status polls
(api/services/job_reads.py).

Each such round trip cost the API's Python the same however little it carried: the pool's checkout and return, the
driver's query and its waits on the socket, the results. A submission's transaction: ~510 us of the API's CPU alone,
~93 us each in a group of 16 (bench/bench_group_commit.py); a poll's SELECT was ~20% of its CPU under load (py-spy,
bench/RESULTS.md). Under load, requests queue for the database anyway. Here the event loop keeps one round trip of
a kind in flight at a time; what arrives meanwhile waits and goes in the next, up to MAX_GROUP together. Alone, a
request goes at once, in a group of one, as before. A group starts after every request in it arrived: each sees
everything that committed before it asked. A group still in flight after STALL_SECONDS (one of its submissions
waits for a lock that another transaction holds) lets the next start beside it, so one slow group does not hold
back every request behind it.

`run_group(items)` answers each item of a group, in order, as it would answer it alone (a submission's insert
counts its owner's queued jobs after the inserts before it in its transaction). A group that fails is run again one
item at a time, so that each gets its own answer: an error one of them caused fails only that one. An error that
each would meet again (the database is gone) fails each of them at once.
A caller that is cancelled does not cancel its item: it goes with its group, and `run_group` decides what happens
after (submissions are sent to their queues from there, whether or not their clients waited).
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

# Items per group: bounds one query and the wait of the first item in it.
MAX_GROUP = 32
# A group in flight longer than this (waiting for a lock another transaction holds, say) no longer holds the next
# one back: it starts beside it, up to MAX_IN_FLIGHT groups at once. A group usually takes a few milliseconds.
STALL_SECONDS = 0.05
MAX_IN_FLIGHT = 4


@dataclass
class _Waiting(Generic[In, Out]):
    items: list[tuple[In, asyncio.Future[Out]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class Grouped(Generic[In, Out]):
    def __init__(self, run_group: Callable[[Sequence[In]], Awaitable[Sequence[Out]]], *,
                 max_group: int = MAX_GROUP, observe: Callable[[int], None] = lambda size: None,
                 one_may_cause: Callable[[Exception], bool] = lambda error: True,
                 stall_seconds: float = STALL_SECONDS, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        """`run_group(items)` answers each item, in order, in one round trip; `observe(size)` hears of each group's
        size before it runs. A group that fails with an error for which `one_may_cause(error)` is false (each item
        would meet it again: the database is gone) fails each of its items at once instead of running them one by
        one. A group in flight for `stall_seconds` lets the next start beside it, up to `max_in_flight` at once."""
        self._run_group = run_group
        self._stall_seconds = stall_seconds
        self._max_in_flight = max_in_flight
        self._one_may_cause = one_may_cause
        self._observe = observe
        self._max_group = max_group
        # Per event loop: futures and tasks belong to the loop they were made on.
        self._loops: dict[asyncio.AbstractEventLoop, _Waiting[In, Out]] = {}

    async def run(self, item: In) -> Out:
        """`item` run with the others that wait for the same round trip; its answer, or its error."""
        loop = asyncio.get_running_loop()
        waiting = self._loops.setdefault(loop, _Waiting())
        done: asyncio.Future[Out] = loop.create_future()
        waiting.items.append((item, done))
        if waiting.task is None:
            waiting.task = loop.create_task(self._drain(loop, waiting))
        return await asyncio.shield(done)

    async def wait_idle(self) -> None:
        """Return once no item of this event loop is waiting or in flight (for shutdown)."""
        waiting = self._loops.get(asyncio.get_running_loop())
        if waiting is not None and waiting.task is not None:
            await asyncio.shield(waiting.task)

    async def _drain(self, loop: asyncio.AbstractEventLoop, waiting: _Waiting[In, Out]) -> None:
        running: dict[asyncio.Task[None], list[tuple[In, asyncio.Future[Out]]]] = {}
        try:
            while waiting.items or running:
                if waiting.items and len(running) < self._max_in_flight:
                    group = waiting.items[:self._max_group]
                    del waiting.items[:self._max_group]
                    running[loop.create_task(self._run(group))] = group
                # Until a group finishes, or the oldest has stalled long enough for the next to start beside it.
                finished, _ = await asyncio.wait(running, timeout=self._stall_seconds,
                                                 return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    del running[task]
        except BaseException:
            # Cancelled (the loop is closing): nobody is left waiting for an answer that will not come. A group in
            # flight may have committed or not; the ones waiting did not run.
            for task in running:
                task.cancel()
            for _, done in [*(item for group in running.values() for item in group), *waiting.items]:
                if not done.done():
                    done.set_exception(RuntimeError("the server shut down before the request was answered"))
            waiting.items.clear()
            raise
        finally:
            # No await since the loop's test: an item that arrives from now on starts a task of its own.
            waiting.task = None
            if not waiting.items:
                self._loops.pop(loop, None)

    async def _run(self, group: list[tuple[In, asyncio.Future[Out]]]) -> None:
        self._observe(len(group))
        try:
            answers = list(await self._run_group([item for item, _ in group]))
            if len(answers) != len(group):
                raise RuntimeError(f"{len(answers)} answers to {len(group)} requests")
        except Exception as exc:  # noqa: BLE001 - each item gets its own answer below
            if len(group) == 1 or not self._one_may_cause(exc):
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                return
            log.info("a group of %d failed (%s: %s); running each alone", len(group), type(exc).__name__, exc)
            for one in group:
                await self._run([one])
            return
        for (_, done), answer in zip(group, answers, strict=True):
            if not done.done():
                done.set_result(answer)
