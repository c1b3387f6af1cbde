"""The embedded broker's adaptive polling (worker/sql_broker.py), on a real SQLite broker file through kombu."""

from __future__ import annotations

import threading

import pytest
from kombu import Connection, Exchange, Queue
from kombu import transport as kombu_transport

from core import broker_wake
from core.queue import _transport_options
from worker import sql_broker


def test_waits_after_empty_polls_double_from_the_minimum_up_to_about_a_second():
    waits = [0.0]
    for _ in range(12):
        waits.append(sql_broker.next_wait(waits[-1]))
    assert waits[1] == sql_broker.MIN_POLL_SECONDS
    assert all(b == min(2 * a, sql_broker.MAX_POLL_SECONDS) for a, b in zip(waits[1:], waits[2:], strict=False))
    assert waits[-1] == sql_broker.MAX_POLL_SECONDS == 1.0


@pytest.fixture
def broker(tmp_path, monkeypatch):
    # What install() changes is kombu's process-wide table: put it back for the tests that follow.
    monkeypatch.setattr(kombu_transport, "TRANSPORT_ALIASES", dict(kombu_transport.TRANSPORT_ALIASES))
    monkeypatch.setattr(kombu_transport, "_transport_cache", dict(kombu_transport._transport_cache))
    sql_broker.install()
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with Connection(url, transport_options=_transport_options(url, 5.0)) as connection:
        yield connection


def test_the_worker_side_of_an_sqla_url_is_the_adaptive_transport(broker):
    assert isinstance(broker.transport, sql_broker.AdaptivePollingTransport)


def test_a_message_sent_is_delivered_at_the_next_drain_and_the_wait_resets(broker):
    queue = Queue("cpu", Exchange("cpu", type="direct"), routing_key="cpu")
    got = []
    with broker.Consumer(queue, callbacks=[lambda body, message: (got.append(body), message.ack())]):
        broker.transport._wait = sql_broker.MAX_POLL_SECONDS  # as after a long idle spell
        broker.Producer().publish({"job": 1}, exchange=queue.exchange, routing_key="cpu", declare=[queue])
        broker.drain_events(timeout=5)
        assert got == [{"job": 1}]
        assert broker.transport._wait == 0.0  # the next poll comes at once: a burst runs back to back


def test_an_empty_queue_backs_off_and_the_drain_ends_at_its_timeout(broker):
    queue = Queue("cpu", Exchange("cpu", type="direct"), routing_key="cpu")
    with broker.Consumer(queue, callbacks=[lambda body, message: message.ack()]):
        with pytest.raises(TimeoutError):
            broker.drain_events(timeout=0.3)
        assert broker.transport._wait >= 4 * sql_broker.MIN_POLL_SECONDS  # backed off: not a busy loop


def test_a_send_through_core_queue_ends_an_idle_workers_wait_between_polls(broker, tmp_path):
    from celery import Celery

    from core.queue import enqueue_job

    queue = Queue("cpu", Exchange("cpu", type="direct"), routing_key="cpu")
    got = []
    sender = Celery("sender", broker=f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    sender.conf.task_queues = [queue]
    with broker.Consumer(queue, callbacks=[lambda body, message: (got.append(body), message.ack())]):
        with pytest.raises(TimeoutError):
            broker.drain_events(timeout=0.05)  # empty polls: the worker now listens for wake-ups
        assert broker.transport._listener is not None
        woken = threading.Event()
        waiter = threading.Thread(target=lambda: (broker.transport._wait_or_wake(120), woken.set()), daemon=True)
        waiter.start()
        enqueue_job(sender, "job-1", "cpu")
        assert woken.wait(60), "a wait of 120 s between polls did not end when a job was sent"
        broker.drain_events(timeout=10)
    assert got[0][0] == ["job-1"]  # celery's message body: [args, kwargs, embed]


def test_the_wake_up_address_names_the_broker_file_and_only_sqlite_brokers_have_one(tmp_path):
    a = broker_wake.address(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    assert a is not None and a == broker_wake.address(f"sqlite:///{tmp_path / 'broker.db'}")  # kombu's spelling
    assert a != broker_wake.address(f"sqla+sqlite:///{tmp_path / 'other.db'}")
    assert broker_wake.address("redis://127.0.0.1:6379/0") is None
    broker_wake.wake("redis://127.0.0.1:6379/0")  # nothing to wake: a no-op
    broker_wake.wake(f"sqla+sqlite:///{tmp_path / 'nobody.db'}")  # nobody listens: no error


def test_a_worker_whose_slot_is_busy_does_not_poll_and_is_woken_by_the_ack(broker, monkeypatch):
    # Waits while busy as long as the test's deadline: only the ack can end them in time.
    monkeypatch.setattr(sql_broker, "BUSY_CHECK_SECONDS", 300.0)
    monkeypatch.setattr(sql_broker, "MAX_POLL_SECONDS", 300.0)
    queue = Queue("cpu", Exchange("cpu", type="direct"), routing_key="cpu")
    held = []
    with broker.Consumer(queue, callbacks=[lambda body, message: held.append(message)], prefetch_count=1):
        producer = broker.Producer()
        for n in (1, 2):
            producer.publish({"job": n}, exchange=queue.exchange, routing_key="cpu", declare=[queue])
        broker.drain_events(timeout=10)
        assert [m.payload for m in held] == [{"job": 1}]  # the slot is now taken until it is acked

        draining = threading.Thread(target=lambda: broker.drain_events(timeout=120), daemon=True)
        draining.start()
        draining.join(0.5)
        assert draining.is_alive() and len(held) == 1  # busy: the second message is not taken
        held[0].ack()
        draining.join(60)
        assert not draining.is_alive(), "the ack did not wake the busy worker"
    assert [m.payload for m in held] == [{"job": 1}, {"job": 2}]
