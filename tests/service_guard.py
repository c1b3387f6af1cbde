"""External services for tests: skip when PostgreSQL/Redis are missing, but fail in CI (CI=true).

Also provisions what a test session needs from them without colliding with parallel sessions: a fresh
PostgreSQL database per session, and an empty Redis database number.
"""

from __future__ import annotations

import os
import random
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require_service(name: str, check: Callable[[], object]) -> None:
    """Run `check` (which raises when `name` is unreachable); skip locally, fail under CI=true."""
    try:
        check()
    except Exception as exc:  # any failure to reach the service means "not available"
        reason = f"{name} is not reachable ({type(exc).__name__}: {exc})"
        if in_ci():
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(f"{reason}; start it to run this test (CI=true makes this a failure)")


def check_postgres() -> None:
    import psycopg

    psycopg.connect(PG_DSN).close()


def check_redis() -> None:
    import redis

    redis.Redis(REDIS_HOST, REDIS_PORT, socket_connect_timeout=2, socket_timeout=2).ping()


@contextmanager
def temporary_postgres_database(prefix: str = "narrownet_test") -> Iterator[str]:
    """Create a database of our own, yield its SQLAlchemy URL, drop it (and its connections) afterwards."""
    import psycopg

    require_service("PostgreSQL at 127.0.0.1:5432", check_postgres)
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.format(name=name)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connections_by_name(database_url: str) -> Counter[str]:
    """Connections to the database of `database_url` (one of temporary_postgres_database's), counted by the
    application_name they gave."""
    import psycopg
    from sqlalchemy import make_url

    database = make_url(database_url).database
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        rows = admin.execute("SELECT application_name FROM pg_stat_activity WHERE datname = %s",
                             (database,)).fetchall()
    return Counter(name for (name,) in rows)


CLAIM_KEY = "narrownet:test-claim"
CLAIM_SECONDS = 6 * 3600  # a claim outlives any test session; a crashed session's claim expires on its own


@contextmanager
def redis_database() -> Iterator[int]:
    """Claim a Redis database number for this test (or session), empty it, yield it, empty it afterwards.

    A claim is a key set only if absent, so parallel sessions never share a number; what a session that died
    left behind in an unclaimed database is flushed, so leftovers can never use up the 15 numbers.
    """
    import redis

    require_service(f"Redis at {REDIS_HOST}:{REDIS_PORT}", check_redis)
    token = secrets.token_hex(8)
    for db in random.sample(range(1, 16), 15):
        client = redis.Redis(REDIS_HOST, REDIS_PORT, db=db, socket_timeout=2)
        if client.set(CLAIM_KEY, token, nx=True, ex=CLAIM_SECONDS):
            break
    else:
        pytest.fail("every Redis database number 1..15 is claimed by another test session")
    try:
        client.flushdb()
        client.set(CLAIM_KEY, token, ex=CLAIM_SECONDS)
        yield db
    finally:
        client.flushdb()
        client.close()
