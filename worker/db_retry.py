"""Riding out a database or artifact store restart, and the API's turn at SQLite's write lock: a worker's writes
retry transient errors with capped exponential backoff.

Transient means busy (SQLite's "database is locked", a lock or pooled connection not granted in time) or
unavailable (the database or the store cannot be reached); core.db.errors tells a database's apart. The retry
budget is the job's lease. Past it the lease has run out anyway and the reconciler may already have put the job
back on its queue, so the attempt gives up (DatabaseUnavailable, ArtifactStoreUnavailable) instead of writing late.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from core.artifacts.errors import StoreUnavailable
from core.db import errors as db_errors

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 2.0


class Unavailable(Exception):
    """A service the attempt needs stayed unreachable (or busy) for a whole lease: it stops without writing an
    outcome, and the reconciler hands the job on once the lease has run out."""


class DatabaseUnavailable(Unavailable):
    """The database stayed unreachable (or busy) for a whole lease."""


class ArtifactStoreUnavailable(Unavailable):
    """The artifact store stayed unreachable for a whole lease."""


def is_transient(exc: BaseException) -> bool:
    """Errors that say a service was busy or could not be reached, not that the request was wrong."""
    return isinstance(exc, StoreUnavailable) or db_errors.is_transient(exc)


def with_retries(write: Callable[[], T], *, what: str, budget_seconds: float) -> T:
    """Run `write` (one whole transaction, or one store operation), retrying transient database and artifact
    store errors for up to budget_seconds.

    `write` must be safe to run again: a commit whose answer was lost may have landed.
    """
    deadline = time.monotonic() + budget_seconds
    delay = FIRST_DELAY_SECONDS
    failures = 0
    while True:
        try:
            return write()
        except (DBAPIError, PoolTimeoutError, StoreUnavailable) as exc:
            if not is_transient(exc):
                raise
            failures += 1
            state = "busy" if db_errors.is_busy(exc) else "unavailable"
            remaining = deadline - time.monotonic()
            service = "artifact store" if isinstance(exc, StoreUnavailable) else "database"
            reason = db_errors.describe(exc)
            if remaining <= 0:
                why = "busy" if state == "busy" else "unreachable"
                gave_up = ArtifactStoreUnavailable if isinstance(exc, StoreUnavailable) else DatabaseUnavailable
                raise gave_up(f"{what}: {service} {why} for {budget_seconds:g}s ({reason})") from exc
            # Jittered, so workers that lost the service together do not all reconnect at one instant.
            pause = min(remaining, random.uniform(delay / 2, delay))
            log.warning("%s: %s %s (%s); retry %d in %.2fs", what, service, state, reason, failures, pause)
            time.sleep(pause)
            delay = min(delay * 2, MAX_DELAY_SECONDS)
