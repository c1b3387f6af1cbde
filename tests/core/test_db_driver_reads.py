"""core.db.driver_reads: a statement compiled once and run on the asyncio pool's psycopg connection gives the rows
SQLAlchemy would, and its failures the errors SQLAlchemy would (a dropped connection invalidated, not reused).
Statements run in one transaction (the API's plain submissions) commit together or not at all, and the queued
cap's insert stops at the cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from core.db.driver_reads import compiled_sql, fetch_dicts, fetch_dicts_in_transaction, fetch_each_in_transaction
from core.db.migrate import upgrade
from core.db.models import ApiKey, Job, JobStatus, new_id, utcnow
from core.db.session import make_engine, make_loop_engine
from core.db.statements import core_table
from core.repositories.jobs import LOCK_OWNER, OWNED_JOB, JobFilters, insert_within_cap, owned_page_query
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


def on_loop_engine(url: str, work: Any, *, read_only: bool = True) -> Any:
    """`work(engine)` on an asyncio engine of one connection: read-only as the API's status polls use, or writable
    (with a lock timeout) as its plain submissions use."""
    async def main() -> Any:
        engine = make_loop_engine(url, busy_timeout=5, pool_size=1, ping_after_idle_seconds=3600,
                                  read_only=read_only, lock_timeout_seconds=None if read_only else 5)
        assert engine is not None
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def run(url: str, read: Any) -> Any:
    return on_loop_engine(url, read)


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


# --------------------------------------------------------------------------- statements in one transaction
def writes(url: str, work: Any) -> Any:
    return on_loop_engine(url, work, read_only=False)


def submitted(owner: str, *, key: str | None = None, name: str = "plain", spec: Any = None) -> dict[str, Any]:
    """insert_within_cap's parameters for one job, as api/services/job_writes.py binds them."""
    now = utcnow()
    return {"id": new_id(), "owner_id": owner, "name": name, "regime": "constrained",
            "spec": json.dumps(spec if spec is not None else spec_of(0)), "queue": "cpu", "status": "queued",
            "idempotency_key": key, "request_hash": "a" * 64, "spec_hash": None, "total_steps": 10, "attempt": 0,
            "step": 0, "cancel_requested": False, "created_at": now, "updated_at": now, "queued": "queued", "cap": 3}


def submit(engine: Any, values: dict[str, Any]) -> Any:
    return fetch_dicts_in_transaction(engine, [(LOCK_OWNER, {"owner_id": values["owner_id"]}),
                                               (insert_within_cap(values["idempotency_key"] is not None), values)])


def test_an_insert_within_the_cap_returns_the_committed_row_and_stops_at_the_cap(url: str, engine: Engine) -> None:
    add_jobs(engine, "owner_d", 0)
    tries = [submitted("owner_d") for _ in range(5)]

    async def work(writer: Any) -> list[Any]:
        return [await submit(writer, values) for values in tries]

    answers = writes(url, work)
    assert [len(rows) for rows in answers] == [1, 1, 1, 0, 0]  # cap 3
    row = answers[0][0]
    assert row["id"] == tries[0]["id"] and row["status"] == "queued" and row["spec"] == spec_of(0)
    assert row == through_sqlalchemy(engine, select(*core_table(Job).c).where(Job.id == row["id"]), {})[0]
    # Sweep configs and jobs past queued do not count against it.
    with Session(engine) as session:
        session.execute(update(Job).where(Job.id == tries[0]["id"]).values(status=JobStatus.RUNNING))
        session.commit()
    assert len(writes(url, lambda writer: submit(writer, submitted("owner_d")))) == 1


def test_a_used_idempotency_key_inserts_nothing_and_the_first_row_stays(url: str, engine: Engine) -> None:
    add_jobs(engine, "owner_e", 0)
    first, again = submitted("owner_e", key="k-1"), submitted("owner_e", key="k-1", name="second")

    async def work(writer: Any) -> tuple[Any, Any]:
        return await submit(writer, first), await submit(writer, again)

    one, two = writes(url, work)
    assert [r["id"] for r in one] == [first["id"]] and two == []
    names = through_sqlalchemy(engine, select(Job.name).where(Job.owner_id == "owner_e"), {})
    assert names == [{"name": "plain"}]


def test_values_are_bound_as_values_whatever_they_hold(url: str, engine: Engine) -> None:
    """Client-side binding quotes each value: quotes, semicolons, backslashes and percent signs arrive as text."""
    add_jobs(engine, "owner_f", 0)
    hostile = {"s": "x'); DELETE FROM jobs; --", "b": "\\'\\\\", "p": "%s %(id)s %%", "u": "é\u2028😀"}
    values = submitted("owner_f", name="o'brien;--", spec=hostile)
    rows = writes(url, lambda writer: submit(writer, values))
    assert rows[0]["spec"] == hostile and rows[0]["name"] == "o'brien;--"
    assert through_sqlalchemy(engine, select(Job.spec).where(Job.id == values["id"]), {}) == [{"spec": hostile}]
    assert len(through_sqlalchemy(engine, select(Job.id), {})) > 1  # nothing was deleted


def test_a_failing_statement_rolls_back_the_ones_before_it_and_the_connection_serves_the_next(
        url: str, engine: Engine) -> None:
    add_jobs(engine, "owner_g", 0)
    taken = submitted("owner_g")
    writes(url, lambda writer: submit(writer, taken))
    fresh, clash = submitted("owner_g"), {**submitted("owner_g"), "id": taken["id"]}
    reinsert = insert_within_cap(False)

    async def work(writer: Any) -> Any:
        rename = (update(core_table(Job)).where(core_table(Job).c.id == bindparam("renamed"))
                  .values(name=bindparam("new_name")))
        renamed = {"renamed": taken["id"], "new_name": "renamed", "updated_at": utcnow()}
        steps = [(LOCK_OWNER, {"owner_id": "owner_g"}), (rename, renamed),
                 (reinsert, clash)]  # a duplicate id: fails
        with pytest.raises(IntegrityError):
            await fetch_dicts_in_transaction(writer, steps)
        return await submit(writer, fresh)  # the same single connection, usable again

    after = writes(url, work)
    assert [r["id"] for r in after] == [fresh["id"]]
    name = through_sqlalchemy(engine, select(Job.name).where(Job.id == taken["id"]), {})
    assert name == [{"name": "plain"}]  # the rename before the failure was rolled back


def test_each_statement_binds_its_own_values_and_answers_with_its_own_rows(url: str, engine: Engine) -> None:
    """Two owners' locks and inserts in one transaction (what a group commit runs): the same parameter names, each
    statement with its values; each insert counts the ones before it in the transaction against the cap."""
    add_jobs(engine, "owner_p", 0)
    add_jobs(engine, "owner_q", 4)  # two of them queued; cap 3: room for one more
    first, second, third = submitted("owner_p"), submitted("owner_q"), submitted("owner_q")

    async def work(writer: Any) -> Any:
        return await fetch_each_in_transaction(writer, [
            (LOCK_OWNER, {"owner_id": "owner_p"}), (LOCK_OWNER, {"owner_id": "owner_q"}),
            *((insert_within_cap(False), values) for values in (first, second, third))])

    locked_h, locked_i, one, two, three = writes(url, work)
    assert locked_h == [{"id": "owner_p"}] and locked_i == [{"id": "owner_q"}]
    assert [r["id"] for r in one] == [first["id"]] and one[0]["owner_id"] == "owner_p"
    assert [r["id"] for r in two] == [second["id"]] and two[0]["owner_id"] == "owner_q"
    assert three == []  # owner_q's third: the one inserted just before filled the cap


def test_no_statements_or_a_missing_value_is_refused(url: str) -> None:
    async def work(writer: Any) -> None:
        with pytest.raises(ValueError, match="no statements"):
            await fetch_each_in_transaction(writer, [])
        with pytest.raises(ValueError, match="statement 1 has no value for parameter 'owner_id'"):
            await fetch_each_in_transaction(writer, [(LOCK_OWNER, {"owner_id": "a"}), (LOCK_OWNER, {"id": "b"})])

    writes(url, work)


async def prepared_names(writer: Any) -> list[str]:
    async with writer.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        cursor = await driver.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'narrownet_%'")
        return sorted(row[0] for row in await cursor.fetchall())


def test_each_statement_is_prepared_once_per_connection_and_again_when_the_connection_lost_it(
        url: str, engine: Engine) -> None:
    add_jobs(engine, "owner_h", 0)

    async def work(writer: Any) -> tuple[Any, ...]:
        for _ in range(3):
            assert len(await submit(writer, {**submitted("owner_h"), "cap": 100})) == 1
        before = await prepared_names(writer)
        async with writer.connect() as connection:  # the pool's one connection, as a pooler's reset leaves it
            await (await connection.get_raw_connection()).driver_connection.execute("DEALLOCATE ALL")
        again = await submit(writer, {**submitted("owner_h"), "cap": 100})
        return before, again, await prepared_names(writer)

    before, again, after = writes(url, work)
    assert len(before) == 2 and after == before  # the lock and the insert, made again under the same names
    assert len(again) == 1
    assert len(through_sqlalchemy(engine, select(Job.id).where(Job.owner_id == "owner_h"), {})) == 4


def test_a_prepared_statement_whose_result_changed_under_it_is_prepared_again() -> None:
    """A migration that changes a returned column's type makes the server refuse the old plan ("cached plan must
    not change result type"): the transaction is rolled back, prepared again and run once more."""
    with temporary_postgres_database("narrownet_stale_plan") as url:
        upgrade(url)
        engine = make_engine(url, pool_size=1)
        add_jobs(engine, "owner_i", 0)
        engine.dispose()

        async def work(writer: Any) -> Any:
            first = await submit(writer, {**submitted("owner_i"), "cap": 100})
            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as admin:
                admin.execute("ALTER TABLE jobs ALTER COLUMN name TYPE text")
            return first, await submit(writer, {**submitted("owner_i", name="after"), "cap": 100})

        first, after = writes(url, work)
        assert len(first) == 1 and [r["name"] for r in after] == ["after"]
