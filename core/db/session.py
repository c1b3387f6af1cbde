"""Engine and session factory, built from the one settings object."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import pydantic_core
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from core.db import sqlite
from core.settings import get_settings


def sqlalchemy_url(url: str) -> str:
    """`postgresql://` (what compose files and libpq users write) means psycopg 3, the driver we ship."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


# SQLite: a connection is a file handle, and waits belong to the write lock (bounded), never to the pool.
SQLITE_POOL_SIZE, SQLITE_POOL_OVERFLOW = 16, 48
POSTGRES_POOL_SIZE, POSTGRES_POOL_OVERFLOW = 10, 20


def make_engine(url: str, *, busy_timeout: float = sqlite.DEFAULT_BUSY_TIMEOUT_SECONDS,
                pool_size: int | None = None, ping_after_idle_seconds: float = 0.0,
                lock_timeout_seconds: float | None = None, application_name: str = "narrownet") -> Engine:
    """An engine whose waits (for a pooled connection, SQLite's write lock) end after `busy_timeout` seconds.

    `pool_size`: connections kept open (default: per backend), plus the backend's overflow.
    `ping_after_idle_seconds` (PostgreSQL): a pooled connection is checked (one round trip) before use only when it
    has sat idle this long; 0 checks it every time. A connection in steady use was alive a moment ago, and if the
    server went away since, its first error invalidates the whole pool.
    `lock_timeout_seconds` (PostgreSQL): every statement on these connections waits at most this long for a lock
    (then lock_not_available); lock_wait_bound() tells what a connection has, so callers skip their SET LOCAL.
    `application_name` (PostgreSQL): what pg_stat_activity shows for these connections, so that whoever sizes
    max_connections sees which part of the service holds which.
    """
    url = sqlalchemy_url(url)
    if url.startswith("sqlite"):
        if make_url(url).database in (None, "", ":memory:"):
            return create_engine(url, connect_args=sqlite.connect_args(busy_timeout))  # one private database
        return create_engine(url, connect_args=sqlite.connect_args(busy_timeout),
                             pool_size=pool_size or SQLITE_POOL_SIZE, max_overflow=SQLITE_POOL_OVERFLOW,
                             pool_timeout=busy_timeout)
    connect_args: dict[str, Any] = {"connect_timeout": 5, **_named(url, application_name)}
    if lock_timeout_seconds is not None:
        connect_args["options"] = f"-c lock_timeout={lock_timeout_ms(lock_timeout_seconds)}"
    engine = create_engine(url, pool_pre_ping=ping_after_idle_seconds <= 0, pool_size=pool_size or POSTGRES_POOL_SIZE,
                           max_overflow=POSTGRES_POOL_OVERFLOW, pool_timeout=busy_timeout, connect_args=connect_args)
    if ping_after_idle_seconds > 0:
        _ping_after_idle(engine, ping_after_idle_seconds)
    if lock_timeout_seconds is not None:
        bound = lock_timeout_ms(lock_timeout_seconds)

        @event.listens_for(engine, "connect")
        def remember_lock_bound(dbapi_connection: Any, record: Any) -> None:
            record.info[_LOCK_TIMEOUT_MS] = bound

    return engine


def make_loop_engine(url: str, *, busy_timeout: float, pool_size: int,
                     ping_after_idle_seconds: float = 0.0, read_only: bool = True,
                     lock_timeout_seconds: float | None = None,
                     application_name: str = "narrownet") -> AsyncEngine | None:
    """PostgreSQL: an asyncio engine for the API's hottest statements, which then cost no trip to a worker thread;
    None for SQLite, whose statements stay on the threaded engine. Autocommit: a statement commits on its own (no
    BEGIN and COMMIT round trips around one SELECT), and a transaction is opened only where one is asked for.

    read_only (the status polls, api/services/job_reads.py): the server refuses any write on these connections
    (default_transaction_read_only). read_only=False: the plain submissions (api/services/job_writes.py), their
    lock waits bounded by `lock_timeout_seconds` as make_engine's are.
    """
    url = sqlalchemy_url(url)
    if not url.startswith("postgresql"):
        return None
    # JSON columns decoded by pydantic-core: half the time of json.loads on the bytes psycopg hands over, which
    # counts when a page of 20 jobs holds 40 JSON values.
    options = [*(["-c default_transaction_read_only=on"] if read_only else []),
               *([f"-c lock_timeout={lock_timeout_ms(lock_timeout_seconds)}"] if lock_timeout_seconds else [])]
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=ping_after_idle_seconds <= 0,
                                 json_deserializer=pydantic_core.from_json,
                                 pool_size=pool_size, max_overflow=POSTGRES_POOL_OVERFLOW, pool_timeout=busy_timeout,
                                 connect_args={"connect_timeout": 5, "options": " ".join(options),
                                               **_named(url, application_name)})
    if ping_after_idle_seconds > 0:
        _ping_after_idle(engine.sync_engine, ping_after_idle_seconds)
    return engine


def _named(url: str, application_name: str) -> dict[str, str]:
    # A name given in the URL (?application_name=...) is the operator's, and stays.
    return {} if "application_name" in make_url(url).query else {"application_name": application_name}


_LOCK_TIMEOUT_MS = "narrownet.lock_timeout_ms"


def lock_timeout_ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def lock_wait_bound(session: Session) -> int | None:
    """The lock_timeout (ms) that the session's PostgreSQL connection was opened with, if any."""
    value = session.connection().connection.info.get(_LOCK_TIMEOUT_MS)
    return int(value) if value is not None else None


_IDLE_SINCE = "narrownet.idle_since"


def _ping_after_idle(engine: Engine, seconds: float) -> None:
    """SQLAlchemy's pre-ping, kept for connections that sat idle `seconds` or more (its own recipe for custom
    disconnect checks: a DisconnectionError at checkout makes the pool replace the connection)."""

    @event.listens_for(engine, "checkin")
    def idle_from_now(dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is not None and time.monotonic() - since < seconds:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001 - any failure means "use another connection"
            raise DisconnectionError(f"pooled connection failed its check: {exc}") from exc
        if not alive:
            raise DisconnectionError("pooled connection failed its check")


def begin_write(session: Session) -> None:
    """Start the session's write transaction now, so that the reads that decide a write see no other writer.

    SQLite: BEGIN IMMEDIATE (the database's write lock, held to commit). PostgreSQL needs nothing here: lock
    the rows the decision depends on (SELECT ... FOR UPDATE) instead.
    """
    connection = session.connection()
    dbapi_connection = connection.connection.dbapi_connection
    if isinstance(dbapi_connection, sqlite.SerializedWrites) and not dbapi_connection.in_transaction:
        # Sent through SQLAlchemy, so that a lock not granted in time is its OperationalError like any other.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


_application_name = "narrownet"


def name_connections(application_name: str) -> None:
    """What this process's get_engine() calls its PostgreSQL connections ("narrownet-worker", ...): set by an entry
    point before its first session; an engine made before is dropped, so the next one carries the name."""
    global _application_name
    _application_name = application_name
    get_sessionmaker.cache_clear()
    get_engine.cache_clear()


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    return make_engine(settings.resolved_database_url, busy_timeout=settings.database_busy_timeout_seconds,
                       application_name=_application_name)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """The one place a non-request session commits (worker tasks, CLI): commit on success, else roll back."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
