"""Test helper: read what really sits in a broker queue, as a worker would."""

from __future__ import annotations

import queue
from typing import Any

from kombu import Connection


def drain_queue(broker_url: str, name: str) -> list[Any]:
    """Consume (and ack) every message waiting in queue `name`; return the kombu messages."""
    messages = []
    with Connection(broker_url) as conn:
        simple = conn.SimpleQueue(name)
        try:
            while True:
                try:
                    message = simple.get(block=False)
                except queue.Empty:
                    return messages
                message.ack()
                messages.append(message)
        finally:
            simple.close()
