"""The API's hottest reads, one job and a page of jobs, as Core rows, with no trip to a worker thread where the
database allows it.

A status poll is the request users (and the dashboard) send most. Through a threaded session it paid for a trip
to a worker thread, a BEGIN and a COMMIT around its one SELECT, and the ORM's loading. On PostgreSQL it now runs on
the runtime's asyncio read engine: each SELECT commits alone, on connections where the server refuses writes. On
SQLite the same statements run on the threaded engine in one worker thread. Either way the request waits for its
turn at the database (Runtime.database_turn) first, like every session does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
from sqlalchemy import Connection, Engine, Row

from api.errors import NotFound
from api.runtime import Runtime
from api.services.jobs import valid_job_id
from core.db.models import ApiKey
from core.repositories.jobs import OWNED_JOB, JobFilters, owned_page_query

T = TypeVar("T")


async def owned_job(runtime: Runtime, owner: ApiKey, job_id: str) -> Row[Any]:
    """The caller's job; another user's job is as absent as one that never existed."""
    if not valid_job_id(job_id):
        raise NotFound(f"no job {job_id[:64]!r}")
    params = {"job_id": job_id, "owner_id": owner.id}
    row = await _read(runtime, lambda connection: connection.execute(OWNED_JOB, params).first())
    if row is None:
        raise NotFound(f"no job {job_id[:64]!r}")
    return row


async def owned_page(runtime: Runtime, owner: ApiKey, filters: JobFilters, *, limit: int,
                     offset: int) -> tuple[Sequence[Row[Any]], int]:
    """A page of the caller's jobs, newest first (rows with a `total` column), and how many match in all."""
    page_statement, count_statement, params = owned_page_query(owner.id, filters)

    def read(connection: Connection) -> tuple[Sequence[Row[Any]], int]:
        rows = connection.execute(page_statement, {**params, "limit": limit, "offset": offset}).all()
        if rows:
            return rows, int(rows[0].total)
        return [], int(connection.execute(count_statement, params).scalar_one())

    return await _read(runtime, read)


async def _read(runtime: Runtime, read: Callable[[Connection], T]) -> T:
    async with runtime.database_turn():
        if runtime.read_engine is not None:
            async with runtime.read_engine.connect() as connection:
                return await connection.run_sync(read)
        return await anyio.to_thread.run_sync(_on_engine, runtime.engine, read)


def _on_engine(engine: Engine, read: Callable[[Connection], T]) -> T:
    with engine.connect() as connection:
        return read(connection)
