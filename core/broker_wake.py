"""Waking the worker of the embedded (SQLite) broker when a message is sent to it.

kombu's SQL transport is polled, and an idle worker polls about once a second (worker/sql_broker.py). So that a
job sent to an idle worker starts at once, the sender (core.queue) also sends a one-byte datagram to a socket
the worker listens on while it waits between polls. The datagram carries nothing: it only ends the wait, and
the worker then polls the broker as usual, so a lost or spurious wake-up changes nothing but timing.

The socket is a Linux abstract one (no file to leave behind), named after the broker's database file; the first
worker on a broker listens, any other polls only. Elsewhere than Linux, nothing is sent and workers only poll.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys

_PREFIXES = ("sqla+sqlite:///", "sqlite:///")  # as configured, and as kombu's connection holds it


def address(broker_url: str) -> bytes | None:
    """The wake-up socket of the SQLite broker at `broker_url`; None for other brokers or platforms."""
    if not sys.platform.startswith("linux"):
        return None
    for prefix in _PREFIXES:
        if broker_url.startswith(prefix):
            path = os.path.realpath(broker_url.removeprefix(prefix).split("?", 1)[0])
            return b"\0narrownet-broker-wake-" + hashlib.sha256(path.encode()).hexdigest()[:32].encode()
    return None


def wake(broker_url: str) -> None:
    """Tell the worker listening on this broker (if any) that a message is there. Never raises, never blocks."""
    target = address(broker_url)
    if target is None:
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            sender.sendto(b"!", target)
    except OSError:
        pass  # nobody listens (it polls anyway), or its queue of wake-ups is full (it is awake already)


def listen(broker_url: str) -> socket.socket | None:
    """A non-blocking socket receiving this broker's wake-ups; None when another worker has it (or not ours)."""
    own = address(broker_url)
    if own is None:
        return None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        listener.bind(own)
    except OSError:
        listener.close()
        return None
    listener.setblocking(False)
    return listener
