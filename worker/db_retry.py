"""Riding out a database restart, and the API's turn at SQLite's write lock: a worker's writes retry transient
errors with capped exponential backoff.

Transient means busy (SQLite's "database is locked", a lock or pooled connection not granted in time) or
unavailable (the database cannot be reached); core.db.errors tells them apart. The retry budget is the job's
lease. Past it the lease has run out anyway and the reconciler may already have put the job back on its
queue, so the attempt gives up (DatabaseUnavailable) instead of writing late.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from core.db.errors import describe, is_busy, is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 2.0


class DatabaseUnavailable(Exception):
    """The database stayed unreachable (or busy) for a whole lease: this attempt stops without an outcome."""


def with_retries(write: Callable[[], T], *, what: str, budget_seconds: float) -> T:
    """Run `write` (one whole transaction), retrying transient database errors for up to budget_seconds.

    `write` must be safe to run again: a commit whose answer was lost may have landed.
    """
    deadline = time.monotonic() + budget_seconds
    delay = FIRST_DELAY_SECONDS
    failures = 0
    while True:
        try:
            return write()
        except (DBAPIError, PoolTimeoutError) as exc:
            if not is_transient(exc):
                raise
            failures += 1
            state = "busy" if is_busy(exc) else "unavailable"
            remaining = deadline - time.monotonic()
            reason = describe(exc)
            if remaining <= 0:
                why = "busy" if state == "busy" else "unreachable"
                raise DatabaseUnavailable(f"{what}: database {why} for {budget_seconds:g}s ({reason})") from exc
            # Jittered, so workers that lost the database together do not all reconnect at one instant.
            pause = min(remaining, random.uniform(delay / 2, delay))
            log.warning("%s: database %s (%s); retry %d in %.2fs", what, state, reason, failures, pause)
            time.sleep(pause)
            delay = min(delay * 2, MAX_DELAY_SECONDS)
