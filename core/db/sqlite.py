"""SQLite for the embedded default, done so that it holds under concurrent clients.

SQLite has one writer at a time. Left to itself, each connection that wants to write polls for the lock with
sleeps that grow to 100 ms, so under load some writers wait for the whole busy timeout while others get in
again and again, and a transaction that read first and writes later can fail at once (WAL's
SQLITE_BUSY_SNAPSHOT) instead of waiting. So every connection we open (ours and kombu's broker) is a
`SerializedWrites` connection:

- WAL journal (readers never block the writer, nor it them), foreign keys on, a busy timeout.
- A write transaction is `BEGIN IMMEDIATE`: it takes the write lock before its first statement, so it never
  has to upgrade a read lock it already holds. It starts at the first INSERT/UPDATE/DELETE of a transaction
  (where pysqlite would have issued a plain BEGIN), or earlier (core.db.session.begin_write) when the reads that
  decide the write must see no other writer (the per-user cap: count, then insert).
- Within one process, writers queue on a lock of our own (one per database file) before they ask SQLite:
  the threads of the API server wait their turn in order instead of polling, and at most one of them at a
  time competes with the other processes (worker, reconciler) for SQLite's lock, so those are not starved.
- Every wait, for our lock and then for SQLite's, ends after `busy_timeout` seconds in all: the caller gets
  "database is locked" (core.db.errors.is_busy), which the API answers with 503 database_busy.

Reads outside a write transaction run in autocommit (pysqlite's default), each a consistent snapshot.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from typing import Any

DEFAULT_BUSY_TIMEOUT_SECONDS = 10.0

# pysqlite opens a transaction implicitly before these; we open it ourselves, as BEGIN IMMEDIATE.
_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.I)
# Someone else's explicit write transaction (kombu's transport issues BEGIN IMMEDIATE TRANSACTION).
_EXPLICIT_WRITE_BEGIN = re.compile(r"^\s*BEGIN\s+(IMMEDIATE|EXCLUSIVE)\b", re.I)

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _reset_after_fork() -> None:
    # A lock held by another thread at fork time would stay held forever in the child (celery's prefork pool).
    global _locks_guard
    _locks.clear()
    _locks_guard = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def _write_lock(database: str) -> threading.Lock | None:
    if database in ("", ":memory:") or database.startswith("file:"):
        return None  # private to its connection: nothing to share
    path = os.path.realpath(database)
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


class SerializedWriteCursor(sqlite3.Cursor):
    """Starts a write transaction with BEGIN IMMEDIATE, behind the process's write lock (see the module)."""

    connection: SerializedWrites

    def execute(self, sql: str, parameters: Any = (), /) -> SerializedWriteCursor:
        self.connection._before(sql)
        try:
            super().execute(sql, parameters)
        finally:
            self.connection._after()
        return self

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> SerializedWriteCursor:
        self.connection._before(sql)
        try:
            super().executemany(sql, seq_of_parameters)
        finally:
            self.connection._after()
        return self


class SerializedWrites(sqlite3.Connection):
    """A pysqlite connection configured for concurrent use (pass as `factory=` to sqlite3.connect)."""

    def __init__(self, database: str, timeout: float = DEFAULT_BUSY_TIMEOUT_SECONDS, *args: Any,
                 **kwargs: Any) -> None:
        super().__init__(database, timeout, *args, **kwargs)
        self.busy_timeout = float(timeout)
        self._lock = _write_lock(str(database))
        self._holding = False
        self._busy_lowered = False
        pragmas = sqlite3.Cursor(self)
        # WAL: the API reads while a worker writes. Foreign keys are off by default in SQLite.
        pragmas.execute("PRAGMA journal_mode=WAL")
        pragmas.execute("PRAGMA foreign_keys=ON")
        pragmas.close()

    def cursor(self, factory: Any = SerializedWriteCursor) -> Any:
        return super().cursor(factory)

    # ------------------------------------------------------------------------------------------ internals
    def _before(self, sql: str) -> None:
        if self.in_transaction:
            return
        if _WRITE.match(sql):
            self._begin(None)
        elif _EXPLICIT_WRITE_BEGIN.match(sql):
            self._begin(sql)

    def _begin(self, explicit: str | None) -> None:
        """Take the process's write lock, then SQLite's (BEGIN IMMEDIATE); at most busy_timeout in all.

        With `explicit` (the caller's own BEGIN IMMEDIATE), only the lock is taken here; the caller's
        statement follows, under the busy timeout that remains, which _after() restores.
        """
        deadline = time.monotonic() + self.busy_timeout
        if self._lock is not None and not self._holding:
            if not self._lock.acquire(timeout=self.busy_timeout):
                raise sqlite3.OperationalError(
                    f"database is locked (other writers in this process held it for {self.busy_timeout:g}s)")
            self._holding = True
        try:
            self._pragma_busy_timeout(deadline - time.monotonic())
            if explicit is None:
                sqlite3.Cursor(self).execute("BEGIN IMMEDIATE")
                self._pragma_busy_timeout(self.busy_timeout)
        except BaseException:
            self._release()
            raise

    def _pragma_busy_timeout(self, seconds: float) -> None:
        self._busy_lowered = seconds < self.busy_timeout
        sqlite3.Cursor(self).execute(f"PRAGMA busy_timeout={max(1, int(seconds * 1000))}")

    def _after(self) -> None:
        if self._busy_lowered:
            self._pragma_busy_timeout(self.busy_timeout)
        # A transaction can end without commit()/rollback(): COMMIT sent as SQL, or SQLite rolling back on
        # an error. The lock goes with it.
        if self._holding and not self.in_transaction:
            self._release()

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            assert self._lock is not None
            self._lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._after()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._after()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()


def connect_args(busy_timeout: float) -> dict[str, Any]:
    """sqlite3.connect arguments for an engine on a SQLite file (ours, or kombu's broker)."""
    # check_same_thread: pooled connections move between the API's threads (never two at once).
    return {"factory": SerializedWrites, "timeout": busy_timeout, "check_same_thread": False}
