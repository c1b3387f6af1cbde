"""enqueue_job against a real Redis broker: a job reaches exactly the queue it was sent to."""

from __future__ import annotations

import pytest
import redis

from core.queue import QUEUES, enqueue_job, make_celery
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
