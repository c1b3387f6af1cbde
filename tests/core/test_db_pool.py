"""The API's pool checks a PostgreSQL connection before use only after it sat idle (core.db.session.make_engine's
ping_after_idle_seconds): a connection the server dropped while it idled is replaced, never handed out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text

from core.db.session import make_engine, make_loop_engine
from tests.service_guard import temporary_postgres_database

pytestmark = pytest.mark.service

IDLE = 0.3


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with temporary_postgres_database("narrownet_pool_test") as url:
        yield url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url, pool_size=1, ping_after_idle_seconds=IDLE)
    yield engine
    engine.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text("SELECT pg_backend_pid()")))


def kill(url: str, pid: int) -> None:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_connection_dropped_while_idle_is_replaced_before_use(engine: Engine, url: str) -> None:
    first = backend_pid(engine)
    kill(url, first)
    time.sleep(IDLE * 2)
    assert backend_pid(engine) != first  # a new connection, and no error


def test_a_connection_in_steady_use_is_reused_without_a_check(engine: Engine, url: str) -> None:
    first = backend_pid(engine)
    assert backend_pid(engine) == first  # the pool's one connection, again
    kill(url, first)  # the server drops it between two requests, with no idle time: the trade the setting makes
    with pytest.raises(Exception, match="terminat|closed|connection"):
        backend_pid(engine)
    assert backend_pid(engine) != first  # the error invalidated the pool: the next checkout connects afresh


def test_ping_on_every_checkout_stays_the_default(url: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        first = backend_pid(engine)
        kill(url, first)
        assert backend_pid(engine) != first  # checked at once, no idle time needed
    finally:
        engine.dispose()


def test_a_lock_timeout_given_to_the_engine_bounds_every_lock_wait_and_is_known_to_callers(url: str) -> None:
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    from core.db.session import lock_wait_bound

    bounded = make_engine(url, pool_size=1, lock_timeout_seconds=0.2)
    plain = make_engine(url, pool_size=1)
    try:
        with plain.begin() as setup:
            setup.execute(text("CREATE TABLE IF NOT EXISTS pool_lock_probe (id int PRIMARY KEY)"))
            setup.execute(text("INSERT INTO pool_lock_probe VALUES (1) ON CONFLICT DO NOTHING"))
        with plain.connect() as holder, Session(bounded) as session, Session(plain) as unbounded:
            holder.execute(text("SELECT id FROM pool_lock_probe WHERE id = 1 FOR UPDATE"))
            assert lock_wait_bound(session) == 200 and lock_wait_bound(unbounded) is None
            with pytest.raises(OperationalError) as waited:
                session.execute(text("SELECT id FROM pool_lock_probe WHERE id = 1 FOR UPDATE"))
            assert getattr(waited.value.orig, "sqlstate", None) == "55P03"  # lock_not_available
    finally:
        bounded.dispose()
        plain.dispose()


def test_the_read_engine_sees_each_commit_at_once_and_the_server_refuses_its_writes(url: str) -> None:
    import asyncio

    from sqlalchemy.exc import DBAPIError

    from core.db.session import make_loop_engine

    assert make_loop_engine("sqlite:///x.db", busy_timeout=1, pool_size=1) is None  # SQLite reads stay threaded
    plain = make_engine(url, pool_size=1)

    async def check() -> None:
        reads = make_loop_engine(url, busy_timeout=5, pool_size=1, ping_after_idle_seconds=IDLE)
        assert reads is not None
        try:
            with plain.begin() as setup:
                setup.execute(text("CREATE TABLE IF NOT EXISTS read_engine_probe (n int)"))
                setup.execute(text("DELETE FROM read_engine_probe"))
            async with reads.connect() as connection:
                assert await connection.scalar(text("SELECT count(*) FROM read_engine_probe")) == 0
                # Autocommit: no snapshot held across statements, so a commit made elsewhere shows at once.
                with plain.begin() as writer:
                    writer.execute(text("INSERT INTO read_engine_probe VALUES (1)"))
                assert await connection.scalar(text("SELECT count(*) FROM read_engine_probe")) == 1
                with pytest.raises(DBAPIError, match="read-only transaction"):
                    await connection.execute(text("INSERT INTO read_engine_probe VALUES (2)"))
            # A connection the server dropped while it idled is replaced before use, as on the threaded engine.
            async with reads.connect() as connection:
                first = await connection.scalar(text("SELECT pg_backend_pid()"))
            kill(url, int(first))
            await asyncio.sleep(IDLE * 2)
            async with reads.connect() as connection:
                assert await connection.scalar(text("SELECT pg_backend_pid()")) != first
        finally:
            await reads.dispose()

    try:
        asyncio.run(check())
        with plain.connect() as connection:  # the refused write left nothing
            assert connection.scalar(text("SELECT count(*) FROM read_engine_probe")) == 1
    finally:
        plain.dispose()


def test_connections_carry_the_name_they_are_given_unless_the_url_names_them(url: str) -> None:
    async def loop_name(engine_url: str) -> str:
        engine = make_loop_engine(engine_url, busy_timeout=5, pool_size=1, application_name="narrownet-api-reads")
        assert engine is not None
        try:
            async with engine.connect() as connection:
                return str(await connection.scalar(text("SHOW application_name")))
        finally:
            await engine.dispose()

    for engine_url, expected in ((url, "narrownet-api"), (f"{url}?application_name=ops-named", "ops-named")):
        engine = make_engine(engine_url, application_name="narrownet-api")
        try:
            with engine.connect() as connection:
                assert connection.scalar(text("SHOW application_name")) == expected
        finally:
            engine.dispose()
    assert asyncio.run(loop_name(url)) == "narrownet-api-reads"
    assert asyncio.run(loop_name(f"{url}?application_name=ops-named")) == "ops-named"
