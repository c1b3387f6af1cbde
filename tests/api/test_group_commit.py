"""Group commit (api/group_commit.py): what arrives while a transaction is in flight goes in the next one, and each
write gets the answer it would get alone. The commits here are plain functions that record their batches; the
submissions' own transaction is tested on PostgreSQL in test_api_group_submissions.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api.errors import DatabaseBusy
from api.group_commit import GroupCommit
from api.services import job_writes

pytestmark = pytest.mark.anyio


class Recorder:
    """A commit that records each batch and, while `hold` is clear, keeps its transaction in flight."""

    def __init__(self, fail_on: frozenset[str] = frozenset()) -> None:
        self.batches: list[list[str]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.fail_on = fail_on

    async def __call__(self, batch: Sequence[str]) -> list[str]:
        self.batches.append(list(batch))
        await self.hold.wait()
        bad = [item for item in batch if item in self.fail_on]
        if bad:
            raise ValueError(f"{bad[0]} is bad")
        return [item.upper() for item in batch]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_write_alone_goes_at_once_in_a_transaction_of_its_own() -> None:
    commit = Recorder()
    group = GroupCommit(commit)
    assert await group.write("a") == "A"
    assert await group.write("b") == "B"
    assert commit.batches == [["a"], ["b"]]


async def test_writes_that_arrive_during_a_transaction_go_together_in_the_next_in_order() -> None:
    commit = Recorder()
    group = GroupCommit(commit)
    commit.hold.clear()
    first = asyncio.ensure_future(group.write("a"))
    await settle()
    assert commit.batches == [["a"]]  # in flight
    rest = [asyncio.ensure_future(group.write(item)) for item in "bcd"]
    await settle()
    assert commit.batches == [["a"]]  # waiting for it
    commit.hold.set()
    assert await first == "A" and await asyncio.gather(*rest) == ["B", "C", "D"]
    assert commit.batches == [["a"], ["b", "c", "d"]]


async def test_a_group_is_at_most_max_batch_writes() -> None:
    commit = Recorder()
    group = GroupCommit(commit, max_batch=2)
    commit.hold.clear()
    writes = [asyncio.ensure_future(group.write(item)) for item in "abcde"]
    await settle()
    commit.hold.set()
    assert await asyncio.gather(*writes) == list("ABCDE")
    assert commit.batches == [["a", "b"], ["c", "d"], ["e"]]  # all five waited before the first transaction


async def test_a_failed_group_is_written_one_by_one_and_only_the_bad_write_fails() -> None:
    commit = Recorder(fail_on=frozenset({"c"}))
    group = GroupCommit(commit)
    commit.hold.clear()
    first = asyncio.ensure_future(group.write("a"))
    await settle()
    rest = [asyncio.ensure_future(group.write(item)) for item in "bcd"]
    await settle()
    commit.hold.set()
    answers = await asyncio.gather(first, *rest, return_exceptions=True)
    assert answers[:2] == ["A", "B"] and answers[3] == "D"
    assert isinstance(answers[2], ValueError) and str(answers[2]) == "c is bad"
    assert commit.batches == [["a"], ["b", "c", "d"], ["b"], ["c"], ["d"]]


async def test_an_error_that_fails_every_write_reaches_each_caller() -> None:
    commit = Recorder(fail_on=frozenset("xy"))
    group = GroupCommit(commit)
    commit.hold.clear()
    writes = [asyncio.ensure_future(group.write(item)) for item in "xy"]
    await settle()
    commit.hold.set()
    answers = await asyncio.gather(*writes, return_exceptions=True)
    assert [str(a) for a in answers] == ["x is bad", "y is bad"]


async def test_a_cancelled_caller_does_not_cancel_its_write_or_the_others() -> None:
    commit = Recorder()
    group = GroupCommit(commit)
    commit.hold.clear()
    first = asyncio.ensure_future(group.write("a"))
    await settle()
    gone, stays = asyncio.ensure_future(group.write("b")), asyncio.ensure_future(group.write("c"))
    await settle()
    gone.cancel()
    first.cancel()
    await settle()
    commit.hold.set()
    assert await stays == "C"
    assert commit.batches == [["a"], ["b", "c"]]  # both cancelled writes were still made
    await group.wait_idle()


async def test_answers_of_the_wrong_length_fail_the_writes_instead_of_leaving_them_waiting() -> None:
    async def short(batch: Sequence[str]) -> list[str]:
        return [item.upper() for item in batch][:-1]

    group = GroupCommit(short)
    with pytest.raises(RuntimeError, match="0 answers to 1 writes"):
        await group.write("a")


async def test_a_transaction_cancelled_at_shutdown_fails_its_writes_and_the_waiting_ones() -> None:
    commit = Recorder()
    group = GroupCommit(commit)
    commit.hold.clear()
    first = asyncio.ensure_future(group.write("a"))
    await settle()
    waiting = asyncio.ensure_future(group.write("b"))
    await settle()
    drains = [task for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "GroupCommit._drain"]
    assert len(drains) == 1
    drains[0].cancel()
    answers = await asyncio.gather(first, waiting, return_exceptions=True)
    assert all(isinstance(a, RuntimeError) and "shutting down" in str(a) for a in answers), answers
    commit.hold.set()
    assert await group.write("c") == "C"  # a later write starts afresh


async def test_an_error_every_write_would_meet_again_fails_the_group_at_once() -> None:
    commit = Recorder(fail_on=frozenset("b"))
    group = GroupCommit(commit, one_may_cause=lambda error: False)
    commit.hold.clear()
    first = asyncio.ensure_future(group.write("a"))
    await settle()
    rest = [asyncio.ensure_future(group.write(item)) for item in "bc"]
    await settle()
    commit.hold.set()
    answers = await asyncio.gather(first, *rest, return_exceptions=True)
    assert answers[0] == "A" and [str(a) for a in answers[1:]] == ["b is bad", "b is bad"]
    assert commit.batches == [["a"], ["b", "c"]]  # not written again one by one


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
