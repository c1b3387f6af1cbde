"""The worker's side of the embedded (SQLite) broker: kombu's SQL transport, polled adaptively.

kombu's SQL transport has no way to be woken: a worker finds a message only by polling, and kombu sleeps a
fixed `polling_interval` after every empty poll. Fixed, it is a trade: long, and a worker that has just
finished a job waits up to a whole interval for the next one (one small job a second at 1 s); short, and an
idle worker takes SQLite's write lock (kombu's poll is a BEGIN IMMEDIATE) many times a second for nothing.

So the wait adapts, in the worker's loop (Transport.drain_events):
- while every channel is busy (prefetch 1: a job is running), nothing is polled; the loop waits for the job's
  message to be acknowledged (or rejected), which wakes it at once; it also looks by itself, without a query,
  after waits that grow from BUSY_CHECK_SECONDS to MAX_POLL_SECONDS (an hour-long job costs ~1 wake-up a second);
- right after a message (or a finished job), the next poll comes at once, and the waits after empty polls
  start at MIN_POLL_SECONDS and double up to MAX_POLL_SECONDS: a burst of jobs runs back to back, and an idle
  worker polls about once a second;
- and a sender wakes it (core/broker_wake.py): a wait between empty polls also ends when a wake-up datagram
  arrives, so a job sent to an idle worker is picked up at once, not at the next poll.
"""

from __future__ import annotations

import select
import socket
import threading
from queue import Empty
from time import monotonic, sleep
from typing import Any

from kombu import transport as kombu_transport
from kombu.transport import sqlalchemy as kombu_sql

from core import broker_wake

MIN_POLL_SECONDS = 0.01
MAX_POLL_SECONDS = 1.0
BUSY_CHECK_SECONDS = 0.005


def next_wait(previous: float) -> float:
    """The wait after an empty poll that followed a wait of `previous` seconds."""
    return min(MAX_POLL_SECONDS, max(MIN_POLL_SECONDS, previous * 2))


class AdaptivePollingChannel(kombu_sql.Channel):
    """kombu's SQL channel that tells its transport when a message it delivered is done with (a slot is free)."""

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)  # type: ignore[no-untyped-call]  # kombu is untyped
        self.connection.slot_freed.set()

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]  # kombu is untyped
        self.connection.slot_freed.set()


class AdaptivePollingTransport(kombu_sql.Transport):
    """kombu's SQL transport with the waits described in the module docstring."""

    Channel = AdaptivePollingChannel
    polling_interval = MIN_POLL_SECONDS
    _wait = 0.0  # seconds to wait after the next empty poll's predecessor; 0: poll at once
    _listener: socket.socket | None = None
    _listening = False  # whether _listener was set up (it stays None when another worker has the wake-ups)
    _busy_wait = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # kombu is untyped
        # Set (from the pool's result thread) when a delivered message is acknowledged or rejected.
        self.slot_freed = threading.Event()

    def _busy(self) -> bool:
        # Every consuming channel is at its prefetch limit: a poll could not take a message anyway.
        channels = [c for c in self.channels if c._consumers]
        return bool(channels) and not any(c.qos.can_consume() for c in channels)

    def drain_events(self, connection: Any, timeout: Any = None, **_: Any) -> None:
        assert self.cycle is not None  # set when the first channel opens
        started = monotonic()
        while True:
            self.slot_freed.clear()  # before looking: an ack from now on ends the wait below
            busy = self._busy()
            if busy:
                self._wait = 0.0  # the job will end: then look for the next one at once
                self._busy_wait = pause = min(MAX_POLL_SECONDS, max(BUSY_CHECK_SECONDS, self._busy_wait * 2))
            else:
                self._busy_wait = 0.0
                try:
                    self.cycle.get(self._deliver, timeout=timeout)
                except Empty:
                    self._wait = next_wait(self._wait)
                    pause = self._wait
                else:
                    self._wait = 0.0
                    return
            if timeout is not None:
                left = timeout - (monotonic() - started)
                if left <= 0:
                    raise TimeoutError()  # socket.timeout, which celery catches
                pause = min(pause, left)
            if busy:
                self.slot_freed.wait(pause)
            else:
                self._wait_or_wake(pause)

    def close_connection(self, connection: Any) -> None:
        if self._listener is not None:
            self._listener.close()
        self._listener, self._listening = None, False
        super().close_connection(connection)  # type: ignore[no-untyped-call]  # kombu is untyped

    def _wait_or_wake(self, seconds: float) -> None:
        """Sleep `seconds`, or less if a sender wakes us: then the next poll comes at once."""
        if not self._listening:
            self._listening = True
            self._listener = broker_wake.listen(str(getattr(self.client, "hostname", "")))
        if self._listener is None:
            sleep(seconds)
            return
        ready, _, _ = select.select([self._listener], [], [], seconds)
        if ready:
            try:
                while self._listener.recv(64):  # every wake-up sent so far: one poll serves them all
                    pass
            except BlockingIOError:
                pass
            self._wait = 0.0


def install() -> None:
    """Make `sqla+...` broker URLs use AdaptivePollingTransport in this process (the worker's)."""
    for alias in ("sqla", "sqlalchemy"):
        kombu_transport.TRANSPORT_ALIASES[alias] = f"{__name__}:AdaptivePollingTransport"
        kombu_transport._transport_cache.pop(alias, None)  # resolved before, by a sender in this process
