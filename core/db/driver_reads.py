"""Statements that SQLAlchemy builds and compiles once, run on the asyncio pool's psycopg connection directly.

For the API's status polls (api/services/job_reads.py), the one request users send most, and its plain submissions
(api/services/job_writes.py). Executing through an
AsyncConnection costs about 180 us of Python per read in the execution context, result processing and the greenlet
hop (bench/RESULTS.md); the database's own work is a fraction of that. Everything else stays SQLAlchemy's:
the statement and its SQL, the pool (checkout, the idle ping, return), and the errors, which reach the caller as
SQLAlchemy's DBAPIError like any other, a dropped connection invalidated.

Rows come as dicts of what psycopg decodes: JSON as Python values, timestamptz as aware datetimes, and strings
where a column type of SQLAlchemy's own would convert them (an Enum column gives its value, not the member).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import Dialect, Executable, Select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine


async def fetch_dicts(engine: AsyncEngine, statement: Select[Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    """The statement's rows as dicts keyed by column label."""
    sql = compiled_sql(statement, engine.dialect)
    async with driver_connection(engine, sql, params) as (driver, _), driver.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(sql, params)
        return await cursor.fetchall()


async def fetch_dicts_in_transaction(engine: AsyncEngine,
                                     steps: Sequence[tuple[Executable, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Statements run in order in one transaction, then its commit; the last one's rows as dicts
    (fetch_each_in_transaction)."""
    return (await fetch_each_in_transaction(engine, steps))[-1]


async def fetch_each_in_transaction(engine: AsyncEngine,
                                    steps: Sequence[tuple[Executable, dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Statements run in order in one transaction, then its commit; each one's rows as dicts, in order. For an
    engine in autocommit. An error rolls all of it back. Each statement takes its parameters from its own dict.

    One round trip, and little Python: each statement is a server-side prepared statement of the connection
    (PREPARE, once per connection; planned once, not for every run), and BEGIN, an EXECUTE of each and COMMIT go as
    one query string, the values bound by psycopg on this side (its client-side binding quotes each as a literal).
    The server still runs each statement after the one before: a lock the first takes holds for the rest.
    bench/bench_submit_tx.py measures it against psycopg's pipeline mode and against unprepared statements."""
    if not steps:
        raise ValueError("no statements to run")
    plans = [prepared(statement, engine.dialect) for statement, _ in steps]
    missing = [(number, name) for number, (plan, (_, given)) in enumerate(zip(plans, steps, strict=True))
               for name in plan.names if name not in given]
    if missing:
        raise ValueError(f"statement {missing[0][0]} has no value for parameter {missing[0][1]!r}")
    values = [given[name] for plan, (_, given) in zip(plans, steps, strict=True) for name in plan.names]
    distinct = list(dict.fromkeys(plans))
    query = ";".join(["BEGIN", *(plan.execute for plan in plans), "COMMIT"])
    async with driver_connection(engine, query, values) as (driver, info):
        ready: set[str] = info.setdefault(_PREPARED, set())
        for last_try in (False, True):
            for plan in distinct:
                if plan.name not in ready:
                    await driver.execute(plan.prepare)
                    ready.add(plan.name)
            cursor = psycopg.AsyncClientCursor(driver, row_factory=dict_row)
            try:
                await cursor.execute(query, values)
            except psycopg.Error as exc:
                if driver.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                    await driver.rollback()  # a failed statement left the transaction open and aborted
                # Gone (DISCARD ALL, a pooler) or stale (a migration changed what it returns): prepared again once.
                if last_try or not isinstance(exc, psycopg.errors.InvalidSqlStatementName | _STALE_PLAN):
                    raise
                await _forget(driver, ready, distinct)
                continue
            rows = []
            for _ in plans:  # past BEGIN, then each statement's result in turn
                cursor.nextset()
                rows.append(await cursor.fetchall())
            return rows
        raise AssertionError("unreachable")


_STALE_PLAN = psycopg.errors.FeatureNotSupported  # "cached plan must not change result type"


async def _forget(driver: psycopg.AsyncConnection[Any], ready: set[str], plans: Sequence[Prepared]) -> None:
    for plan in plans:
        ready.discard(plan.name)
        try:
            await driver.execute(f"DEALLOCATE {plan.name}")
        except psycopg.errors.InvalidSqlStatementName:
            pass


_PREPARED = "narrownet.prepared"  # the names prepared on a pooled connection, in its info (gone with it)


@dataclass(frozen=True)
class Prepared:
    name: str
    prepare: str  # PREPARE name AS <the statement with $n placeholders>
    execute: str  # EXECUTE name(%s, %s, ...), for client-side binding
    names: tuple[str, ...]  # the parameters, in the order of their $n (and of the %s)


@lru_cache(maxsize=64)
def prepared(statement: Executable, dialect: Dialect) -> Prepared:
    """A statement built once, as a server-side prepared statement: named after its SQL (the same SQL, the same
    name on every connection), its parameters in the order of their $n."""
    numbered = type(dialect)(paramstyle="numeric_dollar")  # type: ignore[call-arg]  # DefaultDialect takes it
    compiled = statement.compile(dialect=numbered)  # type: ignore[attr-defined]  # every statement we pass compiles
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("only statements with plain named parameters run on the driver")
    sql = str(compiled)
    name = "narrownet_" + hashlib.sha256(sql.encode()).hexdigest()[:24]
    names = tuple(compiled.positiontup or ())
    execute = f"EXECUTE {name}({', '.join('%s' for _ in names)})" if names else f"EXECUTE {name}"
    return Prepared(name, f"PREPARE {name} AS {sql}", execute, names)


@asynccontextmanager
async def driver_connection(engine: AsyncEngine, sql: str, params: dict[str, Any] | Sequence[Any],
                            ) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], dict[str, Any]]]:
    """A pooled connection's psycopg connection, and the pool's info for it (kept while that connection lives); a
    driver error inside comes out as SQLAlchemy's DBAPIError (for `sql` and `params`), and a connection it broke is
    invalidated, not handed to the next request."""
    async with engine.connect() as connection:
        pooled = await connection.get_raw_connection()
        driver: psycopg.AsyncConnection[Any] = pooled.driver_connection  # type: ignore[assignment]  # typed as the generic DBAPI connection
        try:
            yield driver, pooled.info
        except psycopg.Error as exc:
            broken = driver.broken or driver.closed
            if broken:
                await connection.invalidate(exc)
            raise DBAPIError.instance(sql, params, exc, psycopg.Error, connection_invalidated=broken) from exc


@lru_cache(maxsize=256)
def compiled_sql(statement: Executable, dialect: Dialect) -> str:
    """The statement's SQL with named placeholders, for statements built once (the cache holds them)."""
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]  # every statement we pass compiles
    if compiled.positional or compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("only statements with plain named parameters run on the driver")
    return str(compiled)
