"""External services for tests: skip when PostgreSQL/Redis are missing, but fail in CI (CI=true).

Also provisions what a test session needs from them without colliding with parallel sessions: a fresh
PostgreSQL database per session, and an empty Redis database number.
"""

from __future__ import annotations

import os
import random
import secrets
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


def empty_redis_db() -> int:
    """A Redis database number no one is using right now (other sessions use their own)."""
    import redis

    require_service(f"Redis at {REDIS_HOST}:{REDIS_PORT}", check_redis)
    for db in random.sample(range(1, 16), 15):
        if redis.Redis(REDIS_HOST, REDIS_PORT, db=db, socket_timeout=2).dbsize() == 0:
            return db
    pytest.fail("no empty Redis database number among 1..15")
