"""api/sender.py against a real Redis broker: concurrent sends all arrive and share round trips, a failed batch
is counted for every job in it and still answers every caller, a cancelled caller's job is still sent, and close
sends what is waiting before the thread stops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence

import pytest
import redis
from celery import Celery

from api.sender import Sender
from core.queue import enqueue_jobs, make_celery
from tests.service_guard import REDIS_HOST, REDIS_PORT, redis_database

pytestmark = pytest.mark.service


@pytest.fixture
def broker() -> Iterator[tuple[str, redis.Redis]]:
    with redis_database() as db:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}", redis.Redis(REDIS_HOST, REDIS_PORT, db=db)


def sent_ids(store: redis.Redis, queue: str = "cpu") -> list[str]:
    import json

    return [json.loads(raw)["headers"]["argsrepr"][2:-2] for raw in reversed(store.lrange(queue, 0, -1))]


def test_concurrent_sends_all_arrive_and_what_piled_up_goes_in_one_round_trip(broker) -> None:  # type: ignore[no-untyped-def]
    url, store = broker
    app = make_celery(url)
    batches: list[int] = []
    first_held, all_waiting = threading.Event(), threading.Event()

    def send(jobs: Sequence[tuple[str, str]]) -> None:
        batches.append(len(jobs))
        if len(batches) == 1:  # hold the first batch until every other send waits behind it
            first_held.set()
            assert all_waiting.wait(10)
        enqueue_jobs(app, jobs)

    sender = Sender(send, on_failure=lambda queue: pytest.fail("nothing should fail"))

    async def main() -> None:
        first = asyncio.ensure_future(sender.send("job-0", "cpu"))
        await asyncio.to_thread(first_held.wait, 10)
        rest = [asyncio.ensure_future(sender.send(f"job-{i}", "cpu")) for i in range(1, 40)]
        await asyncio.sleep(0)  # every send has queued its job
        all_waiting.set()
        await asyncio.gather(first, *rest)

    try:
        asyncio.run(main())
    finally:
        sender.close()
        app.close()
    assert batches == [1, 39]
    assert sorted(sent_ids(store)) == sorted(f"job-{i}" for i in range(40))


def test_a_failed_batch_counts_each_of_its_jobs_and_answers_each_caller() -> None:
    app = make_celery("redis://127.0.0.1:1/0")  # nothing listens there
    failures: list[str] = []
    sender = Sender(lambda jobs: enqueue_jobs(app, jobs), on_failure=failures.append)

    async def main() -> None:
        await asyncio.gather(*(sender.send(f"job-{i}", queue) for i, queue in enumerate(["cpu", "gpu", "cpu"])))

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        sender.close()
        app.close()
    assert sorted(failures) == ["cpu", "cpu", "gpu"]


def held_sender(app: Celery, release: threading.Event) -> Sender:
    """A sender whose batches wait for `release` before they go out."""
    def send(jobs: Sequence[tuple[str, str]]) -> None:
        assert release.wait(10)
        enqueue_jobs(app, jobs)

    return Sender(send, on_failure=lambda queue: pytest.fail("nothing should fail"))


def test_a_cancelled_caller_still_has_its_job_sent(broker) -> None:  # type: ignore[no-untyped-def]
    url, store = broker
    app, release = make_celery(url), threading.Event()
    sender = held_sender(app, release)

    async def main() -> None:
        task = asyncio.ensure_future(sender.send("job-kept", "cpu"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.sleep(0)  # the sender's answer finds a cancelled caller and is dropped quietly

    try:
        asyncio.run(main())
    finally:
        sender.close()  # waits for the batch in flight
        app.close()
    assert sent_ids(store) == ["job-kept"]


def test_close_sends_what_is_waiting_and_stops_the_thread(broker) -> None:  # type: ignore[no-untyped-def]
    url, store = broker
    app, release = make_celery(url), threading.Event()
    sender = held_sender(app, release)

    async def main() -> list[threading.Thread]:
        waiting = [asyncio.ensure_future(sender.send(f"job-{i}", "cpu")) for i in range(5)]
        await asyncio.sleep(0.05)  # all five queued behind the first batch, which is held
        threads = [t for t in threading.enumerate() if t.name == "narrownet-sender"]
        closing = asyncio.get_running_loop().run_in_executor(None, sender.close)
        await asyncio.sleep(0.05)
        release.set()
        await closing
        await asyncio.gather(*waiting)
        return threads

    threads = asyncio.run(main())
    app.close()
    assert len(threads) == 1 and not threads[0].is_alive()
    assert sorted(sent_ids(store)) == [f"job-{i}" for i in range(5)]


def test_callers_on_two_event_loops_sharing_a_batch_are_each_answered(broker) -> None:  # type: ignore[no-untyped-def]
    url, store = broker
    app, release = make_celery(url), threading.Event()
    batches: list[int] = []

    def send(jobs: Sequence[tuple[str, str]]) -> None:
        batches.append(len(jobs))
        assert release.wait(10)
        enqueue_jobs(app, jobs)

    sender = Sender(send, on_failure=lambda queue: pytest.fail("nothing should fail"))
    queued = threading.Barrier(3)
    answered: list[str] = []

    def caller(prefix: str) -> None:
        async def main() -> None:
            sends = [asyncio.ensure_future(sender.send(f"{prefix}-{i}", "cpu")) for i in range(3)]
            await asyncio.sleep(0)  # queued behind the held first batch
            await asyncio.to_thread(queued.wait, 10)
            await asyncio.wait_for(asyncio.gather(*sends), 20)
            answered.append(prefix)
        asyncio.run(main())

    try:
        first = threading.Thread(target=asyncio.run, args=(sender.send("first", "cpu"),))
        first.start()
        while not batches:  # the first batch is out and held
            threading.Event().wait(0.01)
        loops = [threading.Thread(target=caller, args=(p,)) for p in ("a", "b")]
        for t in loops:
            t.start()
        queued.wait(10)
        release.set()
        for t in [first, *loops]:
            t.join(30)
            assert not t.is_alive()
    finally:
        sender.close()
        app.close()
    assert batches == [1, 6]  # both loops' jobs went out together
    assert sorted(answered) == ["a", "b"]  # and every caller on each loop got its answer
    assert sorted(sent_ids(store)) == sorted(["first", *(f"{p}-{i}" for p in "ab" for i in range(3))])
