"""The API's hottest reads, one job and a page of jobs, with no trip to a worker thread where the database allows.

A status poll is the request users (and the dashboard) send most. Through a threaded session it paid for a trip
to a worker thread, a BEGIN and a COMMIT around its one SELECT, and the ORM's loading. On PostgreSQL it now runs on
the runtime's asyncio read engine, straight on the driver (core/db/driver_reads.py): each SELECT commits alone, on
connections where the server refuses writes. On SQLite the same statements run on the threaded engine in one
worker thread. Either way the request first waits for its turn at the database (Runtime.database_turn), like
every session does. Rows come as dicts keyed by column.
"""

from __future__ import annotations

from typing import Any

import anyio
from sqlalchemy import Engine, Select

from api.errors import NotFound
from api.runtime import Runtime
from api.services.jobs import valid_job_id
from core.db.driver_reads import fetch_dicts
from core.db.models import ApiKey
from core.repositories.jobs import OWNED_JOB, JobFilters, owned_page_query

Rows = list[dict[str, Any]]


async def owned_job(runtime: Runtime, owner: ApiKey, job_id: str) -> dict[str, Any]:
    """The caller's job; another user's job is as absent as one that never existed."""
    if not valid_job_id(job_id):
        raise NotFound(f"no job {job_id[:64]!r}")
    rows = await _rows(runtime, OWNED_JOB, {"job_id": job_id, "owner_id": owner.id})
    if not rows:
        raise NotFound(f"no job {job_id[:64]!r}")
    return rows[0]


async def owned_page(runtime: Runtime, owner: ApiKey, filters: JobFilters, *, limit: int,
                     offset: int) -> tuple[Rows, int]:
    """A page of the caller's jobs, newest first (each with a `total` column), and how many match in all."""
    page, count, params = owned_page_query(owner.id, filters)
    page_params = {**params, "limit": limit, "offset": offset}
    async with runtime.database_turn():
        if runtime.read_engine is None:
            return await anyio.to_thread.run_sync(_page_on_engine, runtime.engine, page, count, params, page_params)
        rows = await fetch_dicts(runtime.read_engine, page, page_params)
        if rows:
            return rows, int(rows[0]["total"])
        return [], _total(await fetch_dicts(runtime.read_engine, count, params))


def _page_on_engine(engine: Engine, page: Select[Any], count: Select[Any], params: dict[str, Any],
                    page_params: dict[str, Any]) -> tuple[Rows, int]:
    rows = _rows_on_engine(engine, page, page_params)
    if rows:
        return rows, int(rows[0]["total"])
    return [], _total(_rows_on_engine(engine, count, params))


def _total(count_rows: Rows) -> int:
    # An empty page says nothing about how many there are before it: the count alone does.
    return int(next(iter(count_rows[0].values())))


async def _rows(runtime: Runtime, statement: Select[Any], params: dict[str, Any]) -> Rows:
    async with runtime.database_turn():
        if runtime.read_engine is not None:
            return await fetch_dicts(runtime.read_engine, statement, params)
        return await anyio.to_thread.run_sync(_rows_on_engine, runtime.engine, statement, params)


def _rows_on_engine(engine: Engine, statement: Select[Any], params: dict[str, Any]) -> Rows:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(statement, params)]
