"""core.db.driver_reads: a statement compiled once and run on the asyncio pool's psycopg connection gives the rows
SQLAlchemy would, and its failures the errors SQLAlchemy would (a dropped connection invalidated, not reused)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.db.driver_reads import compiled_sql, fetch_dicts
from core.db.migrate import upgrade
from core.db.models import ApiKey, Job, JobStatus, utcnow
from core.db.session import make_engine, make_read_engine
from core.repositories.jobs import OWNED_JOB, JobFilters, owned_page_query
from tests.service_guard import temporary_postgres_database

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with temporary_postgres_database("narrownet_driver_reads") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="module")
def engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url, pool_size=1)
    yield engine
    engine.dispose()


def spec_of(i: int) -> dict[str, Any]:
    # Values a JSON decoder may get wrong: both paths must decode them alike.
    return {"n": i, "x": [1.5, 0.1, 1e-300, -0.0], "big": 2**70, "s": "é\u2028"}


def add_jobs(engine: Engine, owner: str, count: int) -> list[str]:
    now = utcnow()
    with Session(engine) as session:
        if session.get(ApiKey, owner) is None:
            session.add(ApiKey(id=owner, name=owner, key_hash=owner * 2, prefix=owner[:8]))
            session.flush()
        jobs = [Job(owner_id=owner, name=f"job_{i}", regime="constrained", queue="cpu", spec=spec_of(i),
                    status=JobStatus.RUNNING if i % 2 else JobStatus.QUEUED, step=i, total_steps=10,
                    latest_metrics={"loss": 0.25} if i else None, started_at=now - timedelta(seconds=i),
                    created_at=now + timedelta(seconds=i)) for i in range(count)]
        session.add_all(jobs)
        session.commit()
        return [job.id for job in jobs]


def through_sqlalchemy(engine: Engine, statement: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(statement, params)]


def run(url: str, read: Any) -> Any:
    async def main() -> Any:
        reads = make_read_engine(url, busy_timeout=5, pool_size=1, ping_after_idle_seconds=3600)
        assert reads is not None
        try:
            return await read(reads)
        finally:
            await reads.dispose()

    return asyncio.run(main())


def test_a_job_and_a_filtered_page_read_on_the_driver_equal_what_sqlalchemy_reads(url: str, engine: Engine) -> None:
    ids = add_jobs(engine, "owner_a", 5)
    add_jobs(engine, "owner_b", 2)  # never in owner_a's answers
    one = {"job_id": ids[3], "owner_id": "owner_a"}
    page, count, params = owned_page_query("owner_a", JobFilters(status=JobStatus.RUNNING, id_prefix=ids[3][:4]))
    page_params = {**params, "limit": 10, "offset": 0}

    async def read(reads: Any) -> tuple[Any, ...]:
        return (await fetch_dicts(reads, OWNED_JOB, one), await fetch_dicts(reads, page, page_params),
                await fetch_dicts(reads, count, params))

    job, rows, counted = run(url, read)
    assert job == through_sqlalchemy(engine, OWNED_JOB, one) and job[0]["id"] == ids[3]
    assert job[0]["spec"] == spec_of(3)
    assert job[0]["created_at"].tzinfo is not None
    assert rows == through_sqlalchemy(engine, page, page_params)
    assert [r["id"] for r in rows] == [ids[3]] and rows[0]["total"] == 1
    assert counted == through_sqlalchemy(engine, count, params) and list(counted[0].values()) == [1]


def test_an_id_prefix_matches_literally_not_as_a_like_pattern(url: str, engine: Engine) -> None:
    add_jobs(engine, "owner_c", 2)
    page, _, params = owned_page_query("owner_c", JobFilters(id_prefix="%"))
    assert through_sqlalchemy(engine, page, {**params, "limit": 10, "offset": 0}) == []


def test_a_connection_the_server_dropped_fails_one_read_as_sqlalchemy_would_and_is_not_reused(url: str) -> None:
    async def read(reads: Any) -> tuple[Any, ...]:
        pid_query = select(bindparam("x"))  # any statement: the backend's pid comes from the driver below
        async with reads.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            pid = driver.info.backend_pid
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(DBAPIError) as failed:  # no ping (the connection was used a moment ago)
            await fetch_dicts(reads, pid_query, {"x": 1})
        return failed.value, await fetch_dicts(reads, pid_query, {"x": 2})

    error, after = run(url, read)
    assert error.connection_invalidated and isinstance(error.orig, psycopg.OperationalError)
    assert list(after[0].values()) == [2]  # a new connection


def test_a_statement_with_expanding_parameters_is_refused(url: str) -> None:
    async def read(reads: Any) -> None:
        with pytest.raises(ValueError, match="plain named parameters"):
            compiled_sql(select(Job.id).where(Job.id.in_(["a", "b"])), reads.dialect)

    run(url, read)
