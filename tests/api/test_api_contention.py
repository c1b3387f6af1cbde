"""Contention answers 503 database_busy with Retry-After after a bounded wait, and is never called "unreachable":
a submit whose lock another connection holds (SQLite's write lock; the owner's row lock on PostgreSQL), and a
request that cannot get a turn at the database. The refused request leaves nothing behind."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import make_url, select

from core.db.models import ApiKey
from core.db.session import make_engine
from tests.api.conftest import SPEC, Api, ApiFactory

pytestmark = pytest.mark.anyio


@contextmanager
def another_writer_holding_the_lock(url: str, owner_id: str) -> Iterator[None]:
    """What a submit must lock is held by another connection (as by another process) until the block ends."""
    if url.startswith("sqlite"):
        holder = sqlite3.connect(str(make_url(url).database), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    engine = make_engine(url)
    try:
        with engine.connect() as holder:
            holder.execute(select(ApiKey.id).where(ApiKey.id == owner_id).with_for_update(key_share=True))
            yield
            holder.rollback()
    finally:
        engine.dispose()


def assert_busy(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_busy"
    assert response.headers["retry-after"] == "1"
    assert "unreachable" not in response.text


async def test_a_submit_that_cannot_get_its_lock_in_time_is_503_database_busy(api_factory: ApiFactory) -> None:
    async with api_factory(database_busy_timeout_seconds=0.5) as api:
        user = api.new_user()
        with another_writer_holding_the_lock(api.settings.resolved_database_url, api.owner_id(user)):
            assert_busy(await api.client.post("/v1/jobs", json=SPEC, headers=user))
            # Reading is not writing: it goes on meanwhile.
            assert (await api.client.get("/v1/jobs", headers=user)).json()["total"] == 0
        created = await api.client.post("/v1/jobs", json=SPEC, headers=user)
        assert created.status_code == 201
        assert (await api.client.get("/v1/jobs", headers=user)).json()["total"] == 1


async def test_a_request_that_waits_too_long_for_a_turn_is_503_database_busy(api_factory: ApiFactory) -> None:
    async with api_factory(api_db_concurrency=1, database_busy_timeout_seconds=0.3) as api:
        user = api.new_user()
        await api.runtime.turns.acquire()  # the only turn, as a request in flight would hold it
        try:
            assert_busy(await api.client.get("/v1/jobs", headers=user))
        finally:
            api.runtime.turns.release()
        assert (await api.client.get("/v1/jobs", headers=user)).status_code == 200


async def test_the_readiness_probe_needs_no_turn(api: Api) -> None:
    # Taking every turn must not make the service look down to an orchestrator.
    for _ in range(api.settings.api_db_concurrency):
        await api.runtime.turns.acquire()
    try:
        assert (await api.client.get("/readyz")).status_code == 200
    finally:
        for _ in range(api.settings.api_db_concurrency):
            api.runtime.turns.release()
