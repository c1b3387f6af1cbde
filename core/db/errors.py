"""What a database error means for the caller: busy (contention: retry shortly), unavailable (no database to
talk to), or neither (the statement itself failed). Shared by the API's 503s and the worker's retries.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# SQLITE_BUSY, SQLITE_LOCKED: another connection holds the lock ("database is locked").
_SQLITE_BUSY_CODES = {5, 6}
# PostgreSQL SQLSTATEs of contention: serialization_failure, deadlock_detected, lock_not_available.
_PG_BUSY_STATES = {"40001", "40P01", "55P03"}


def is_busy(exc: BaseException) -> bool:
    """Contention, not an outage: every pooled connection in use, or a lock not granted in time."""
    if isinstance(exc, PoolTimeoutError):
        return True
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        return getattr(orig, "sqlite_errorcode", None) in _SQLITE_BUSY_CODES or "database is locked" in str(orig)
    return getattr(orig, "sqlstate", None) in _PG_BUSY_STATES


def is_unavailable(exc: BaseException) -> bool:
    """The database could not be reached, or dropped the connection."""
    if is_busy(exc) or not isinstance(exc, DBAPIError):
        return False
    return isinstance(exc, (OperationalError, InterfaceError)) or bool(exc.connection_invalidated)


def is_transient(exc: BaseException) -> bool:
    """Worth running the same transaction again a little later."""
    return is_busy(exc) or is_unavailable(exc)


def describe(exc: BaseException) -> str:
    """The driver's first line, for logs only (it may name hosts, ports and users)."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
