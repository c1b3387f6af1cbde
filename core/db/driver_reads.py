"""A SELECT that SQLAlchemy builds and compiles once, run on the asyncio pool's psycopg connection directly.

For the API's status polls (api/services/job_reads.py), the one request users send most. Executing through an
AsyncConnection costs about 180 us of Python per read in the execution context, result processing and the greenlet
hop (bench/RESULTS.md); the database's own work is a fraction of that. Everything else stays SQLAlchemy's:
the statement and its SQL, the pool (checkout, the idle ping, return), and the errors, which reach the caller as
SQLAlchemy's DBAPIError like any other, a dropped connection invalidated.

Rows come as dicts of what psycopg decodes: JSON as Python values, timestamptz as aware datetimes, and strings
where a column type of SQLAlchemy's own would convert them (an Enum column gives its value, not the member).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import Dialect, Select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine


async def fetch_dicts(engine: AsyncEngine, statement: Select[Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    """The statement's rows as dicts keyed by column label."""
    sql = compiled_sql(statement, engine.dialect)
    async with engine.connect() as connection:
        pooled = await connection.get_raw_connection()
        driver: psycopg.AsyncConnection[Any] = pooled.driver_connection  # type: ignore[assignment]  # typed as the generic DBAPI connection
        try:
            async with driver.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(sql, params)
                return await cursor.fetchall()
        except psycopg.Error as exc:
            broken = driver.broken or driver.closed
            if broken:
                await connection.invalidate(exc)
            raise DBAPIError.instance(sql, params, exc, psycopg.Error, connection_invalidated=broken) from exc


@lru_cache(maxsize=256)
def compiled_sql(statement: Select[Any], dialect: Dialect) -> str:
    """The statement's SQL with named placeholders, for statements built once (the cache holds them)."""
    compiled = statement.compile(dialect=dialect)
    if compiled.positional or compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("only statements with plain named parameters run on the driver")
    return str(compiled)
