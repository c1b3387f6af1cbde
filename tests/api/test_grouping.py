"""Grouping (api/grouping.py): what arrives while a round trip is in flight goes in the next one, and each
request gets the answer it would get alone. The groups here run plain functions that record them; the
submissions' own transaction is tested on PostgreSQL in test_api_group_submissions.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api.errors import DatabaseBusy
from api.grouping import Grouped
from api.services import job_writes

pytestmark = pytest.mark.anyio


class Recorder:
    """A run_group that records each group and, while `hold` is clear, keeps its round trip in flight (only groups
    with an item in `stuck`, when that is given)."""

    def __init__(self, fail_on: frozenset[str] = frozenset(), stuck: frozenset[str] | None = None) -> None:
        self.groups: list[list[str]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.fail_on = fail_on
        self.stuck = stuck

    async def __call__(self, group: Sequence[str]) -> list[str]:
        self.groups.append(list(group))
        if self.stuck is None or self.stuck.intersection(group):
            await self.hold.wait()
        bad = [item for item in group if item in self.fail_on]
        if bad:
            raise ValueError(f"{bad[0]} is bad")
        return [item.upper() for item in group]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def grouped(run_group: Any, **options: Any) -> Grouped[str, str]:
    """Grouped, with a stall long enough that no group starts beside another unless a test asks for it."""
    return Grouped(run_group, **{"stall_seconds": 60.0, **options})


async def test_a_request_alone_goes_at_once_in_a_group_of_its_own() -> None:
    run_group = Recorder()
    group = grouped(run_group)
    assert await group.run("a") == "A"
    assert await group.run("b") == "B"
    assert run_group.groups == [["a"], ["b"]]


async def test_requests_that_arrive_during_a_round_trip_go_together_in_the_next_in_order() -> None:
    run_group = Recorder()
    group = grouped(run_group)
    run_group.hold.clear()
    first = asyncio.ensure_future(group.run("a"))
    await settle()
    assert run_group.groups == [["a"]]  # in flight
    rest = [asyncio.ensure_future(group.run(item)) for item in "bcd"]
    await settle()
    assert run_group.groups == [["a"]]  # waiting for it
    run_group.hold.set()
    assert await first == "A" and await asyncio.gather(*rest) == ["B", "C", "D"]
    assert run_group.groups == [["a"], ["b", "c", "d"]]


async def test_a_group_is_at_most_max_group_requests() -> None:
    run_group = Recorder()
    group = grouped(run_group, max_group=2)
    run_group.hold.clear()
    asked = [asyncio.ensure_future(group.run(item)) for item in "abcde"]
    await settle()
    run_group.hold.set()
    assert await asyncio.gather(*asked) == list("ABCDE")
    assert run_group.groups == [["a", "b"], ["c", "d"], ["e"]]  # all five waited before the first round trip


async def test_a_failed_group_is_run_one_by_one_and_only_the_bad_request_fails() -> None:
    run_group = Recorder(fail_on=frozenset({"c"}))
    group = grouped(run_group)
    run_group.hold.clear()
    first = asyncio.ensure_future(group.run("a"))
    await settle()
    rest = [asyncio.ensure_future(group.run(item)) for item in "bcd"]
    await settle()
    run_group.hold.set()
    answers = await asyncio.gather(first, *rest, return_exceptions=True)
    assert answers[:2] == ["A", "B"] and answers[3] == "D"
    assert isinstance(answers[2], ValueError) and str(answers[2]) == "c is bad"
    assert run_group.groups == [["a"], ["b", "c", "d"], ["b"], ["c"], ["d"]]


async def test_an_error_that_fails_every_request_reaches_each_caller() -> None:
    run_group = Recorder(fail_on=frozenset("xy"))
    group = grouped(run_group)
    run_group.hold.clear()
    asked = [asyncio.ensure_future(group.run(item)) for item in "xy"]
    await settle()
    run_group.hold.set()
    answers = await asyncio.gather(*asked, return_exceptions=True)
    assert [str(a) for a in answers] == ["x is bad", "y is bad"]


async def test_a_cancelled_caller_does_not_cancel_its_request_or_the_others() -> None:
    run_group = Recorder()
    group = grouped(run_group)
    run_group.hold.clear()
    first = asyncio.ensure_future(group.run("a"))
    await settle()
    gone, stays = asyncio.ensure_future(group.run("b")), asyncio.ensure_future(group.run("c"))
    await settle()
    gone.cancel()
    first.cancel()
    await settle()
    run_group.hold.set()
    assert await stays == "C"
    assert run_group.groups == [["a"], ["b", "c"]]  # both cancelled requests still ran
    await group.wait_idle()


async def test_answers_of_the_wrong_length_fail_the_requests_instead_of_leaving_them_waiting() -> None:
    async def short(group: Sequence[str]) -> list[str]:
        return [item.upper() for item in group][:-1]

    group = grouped(short)
    with pytest.raises(RuntimeError, match="0 answers to 1 requests"):
        await group.run("a")


async def test_a_round_trip_cancelled_at_shutdown_fails_its_requests_and_the_waiting_ones() -> None:
    run_group = Recorder()
    group = grouped(run_group)
    run_group.hold.clear()
    first = asyncio.ensure_future(group.run("a"))
    await settle()
    waiting = asyncio.ensure_future(group.run("b"))
    await settle()
    drains = [task for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "Grouped._drain"]
    assert len(drains) == 1
    drains[0].cancel()
    answers = await asyncio.gather(first, waiting, return_exceptions=True)
    assert all(isinstance(a, RuntimeError) and "shut down" in str(a) for a in answers), answers
    run_group.hold.set()
    assert await group.run("c") == "C"  # a later request starts afresh


async def test_an_error_every_request_would_meet_again_fails_the_group_at_once() -> None:
    run_group = Recorder(fail_on=frozenset("b"))
    group = grouped(run_group, one_may_cause=lambda error: False)
    run_group.hold.clear()
    first = asyncio.ensure_future(group.run("a"))
    await settle()
    rest = [asyncio.ensure_future(group.run(item)) for item in "bc"]
    await settle()
    run_group.hold.set()
    answers = await asyncio.gather(first, *rest, return_exceptions=True)
    assert answers[0] == "A" and [str(a) for a in answers[1:]] == ["b is bad", "b is bad"]
    assert run_group.groups == [["a"], ["b", "c"]]  # not written again one by one


async def test_a_stalled_group_lets_the_next_start_beside_it() -> None:
    """A group stuck past stall_seconds (a lock held elsewhere) does not hold back what arrives after it."""
    run_group = Recorder(stuck=frozenset("a"))
    group = grouped(run_group, stall_seconds=0.01)
    run_group.hold.clear()
    stuck = asyncio.ensure_future(group.run("a"))
    await asyncio.sleep(0.03)
    later = asyncio.ensure_future(group.run("b"))
    assert await asyncio.wait_for(later, 30) == "B"
    assert not stuck.done()  # still waiting for its lock
    run_group.hold.set()
    assert await stuck == "A"
    assert run_group.groups == [["a"], ["b"]]
    await group.wait_idle()


async def test_at_most_max_in_flight_groups_run_at_once() -> None:
    run_group = Recorder(stuck=frozenset("abc"))
    group = grouped(run_group, stall_seconds=0.01, max_in_flight=2)
    run_group.hold.clear()
    asked = [asyncio.ensure_future(group.run("a"))]
    await asyncio.sleep(0.03)
    asked.append(asyncio.ensure_future(group.run("b")))
    await asyncio.sleep(0.03)
    asked.append(asyncio.ensure_future(group.run("c")))
    await asyncio.sleep(0.05)
    assert run_group.groups == [["a"], ["b"]]  # c waits for a free place
    run_group.hold.set()
    assert await asyncio.gather(*asked) == ["A", "B", "C"]
    assert run_group.groups == [["a"], ["b"], ["c"]]


async def test_groups_in_flight_side_by_side_are_each_failed_at_shutdown() -> None:
    run_group = Recorder()
    group = grouped(run_group, stall_seconds=0.01)
    run_group.hold.clear()
    first = asyncio.ensure_future(group.run("a"))
    await asyncio.sleep(0.03)
    second = asyncio.ensure_future(group.run("b"))
    await asyncio.sleep(0.03)
    assert run_group.groups == [["a"], ["b"]]
    drains = [task for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "Grouped._drain"]
    drains[0].cancel()
    answers = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(a, RuntimeError) and "shut down" in str(a) for a in answers), answers


def driver_error(error: psycopg.Error) -> DBAPIError:
    """The error SQLAlchemy raises for a driver error (core.db.driver_reads raises the same)."""
    return DBAPIError.instance("EXECUTE ...", [], error, psycopg.Error)


@pytest.mark.parametrize(("error", "each_alone"), [
    (driver_error(psycopg.errors.UniqueViolation("duplicate key")), True),  # one submission's value
    (driver_error(psycopg.errors.LockNotAvailable("lock timeout")), True),  # one owner's lock, held elsewhere
    (driver_error(psycopg.errors.DeadlockDetected("deadlock")), True),
    (driver_error(psycopg.OperationalError("connection refused")), False),  # the database is gone for all
    (DatabaseBusy(), False),  # no turn at the database: each would wait for one again
    (PoolTimeoutError("QueuePool limit reached"), False),
], ids=["constraint", "lock", "deadlock", "unreachable", "no-turn", "no-connection"])
def test_a_failed_group_of_submissions_is_written_one_by_one_only_for_an_error_one_of_them_may_cause(
        error: Exception, each_alone: bool) -> None:
    assert job_writes.one_may_cause(error) is each_alone
