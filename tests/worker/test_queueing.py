"""enqueue_job and enqueue_jobs against a real Redis broker: a job reaches exactly the queue it was sent to, and jobs
sent together are the same messages as jobs sent one by one."""

from __future__ import annotations

import json

import pytest
import redis

from core.queue import QUEUES, enqueue_job, enqueue_jobs, make_celery
from tests.service_guard import REDIS_HOST, REDIS_PORT, redis_database

pytestmark = pytest.mark.service


@pytest.fixture
def broker():
    with redis_database() as db:
        yield from _broker(db)


def _broker(db: int):  # type: ignore[no-untyped-def]
    app = make_celery(f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}")
    store = redis.Redis(REDIS_HOST, REDIS_PORT, db=db)
    # Declare every queue first, as a worker consuming all of them does, so each binding exists.
    with app.connection_for_write() as connection:
        for queue in app.amqp.queues.values():
            queue.bind(connection).declare()
    yield app, store
    app.close()


@pytest.mark.parametrize("target", QUEUES)
def test_a_job_lands_only_on_its_own_queue(broker, target):
    app, store = broker

    enqueue_job(app, "job-1", target)

    assert {q: store.llen(q) for q in QUEUES} == {q: int(q == target) for q in QUEUES}


def test_an_unknown_queue_is_refused(broker):
    app, store = broker
    with pytest.raises(ValueError, match="queue: unknown queue 'tpu'"):
        enqueue_job(app, "job-1", "tpu")
    assert sum(store.llen(q) for q in QUEUES) == 0


def test_jobs_sent_together_are_the_messages_sent_one_by_one_on_their_own_queues(broker):
    app, store = broker
    enqueue_job(app, "alone", "cpu")
    enqueue_jobs(app, [("together-1", "cpu"), ("together-2", "gpu"), ("together-3", "cpu")])

    assert {q: store.llen(q) for q in QUEUES} == {"cpu": 3, "gpu": 1}
    # kombu pushes to the left: the oldest message is the last element. Same envelope, same task headers.
    cpu = [json.loads(raw) for raw in reversed(store.lrange("cpu", 0, -1))]
    assert [m["headers"]["argsrepr"] for m in cpu] == ["['alone']", "['together-1']", "['together-3']"]
    shape = {(m["content-type"], m["headers"]["task"], m["properties"]["delivery_info"]["routing_key"],
              tuple(sorted(m["headers"]))) for m in cpu}
    assert len(shape) == 1


def test_a_batch_with_an_unknown_queue_sends_nothing(broker):
    app, store = broker
    with pytest.raises(ValueError, match="queue: unknown queue 'tpu'"):
        enqueue_jobs(app, [("job-1", "cpu"), ("job-2", "tpu")])
    assert sum(store.llen(q) for q in QUEUES) == 0


def test_a_batch_lands_on_its_queues_in_a_broker_that_no_worker_has_declared_them_in():
    with redis_database() as db:
        app = make_celery(f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}")
        store = redis.Redis(REDIS_HOST, REDIS_PORT, db=db)
        try:
            enqueue_jobs(app, [("first", "gpu"), ("second", "gpu"), ("third", "cpu")])
            assert {q: store.llen(q) for q in QUEUES} == {"cpu": 1, "gpu": 2}
        finally:
            app.close()


def test_an_id_that_needs_quoting_gets_the_args_repr_celery_makes(broker):
    app, store = broker
    enqueue_job(app, "it's", "cpu")
    enqueue_jobs(app, [("it's", "cpu"), ("plain-id_1", "cpu")])

    cpu = [json.loads(raw) for raw in reversed(store.lrange("cpu", 0, -1))]
    alone, together, plain = (m["headers"]["argsrepr"] for m in cpu)
    assert together == alone  # Celery's own spelling, whatever it is
    assert plain == "['plain-id_1']"
    assert {m["headers"]["kwargsrepr"] for m in cpu} == {"{}"}
