"""The API's hottest reads, one job and a page of jobs, with no trip to a worker thread where the database allows.

A status poll is the request users (and the dashboard) send most. Through a threaded session it paid for a trip
to a worker thread, a BEGIN and a COMMIT around its one SELECT, and the ORM's loading. On PostgreSQL it now runs on
the runtime's asyncio read engine, straight on the driver (core/db/driver_reads.py): each SELECT commits alone, on
connections where the server refuses writes; rows come as dicts keyed by column. On SQLite the read is the
jobs service's, on a session of its own in one worker thread. Either way the request first waits for its turn at
the database (Runtime.database_turn), like every session does. A list page is kept for a moment (page_cache.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import Response
from pydantic import TypeAdapter

from api.schemas import JobOut, JobPage, JobRow
from api.services import jobs
from core.db.driver_reads import fetch_dicts
from core.db.models import ApiKey, JobStatus
from core.repositories.jobs import JOBS_WITH_IDS, OWNED_JOB, JobFilters, owned_page_query

if TYPE_CHECKING:  # the runtime builds this module's grouped reads
    from api.runtime import Runtime


async def owned_job(runtime: Runtime, owner: ApiKey, job_id: str) -> JobRow:
    """The caller's job; another user's job is as absent as one that never existed. On PostgreSQL, read with the
    other polls that arrive meanwhile (read_jobs)."""
    if not jobs.valid_job_id(job_id):
        raise jobs.job_not_found(job_id)
    if runtime.job_reads is None:
        async with runtime.database_turn():
            return await runtime.in_own_session(lambda session: jobs.get_job(session, owner, job_id))
    row = await runtime.job_reads.run((owner.id, job_id))
    if row is None:
        raise jobs.job_not_found(job_id)
    return row


async def read_jobs(runtime: Runtime, polls: Sequence[tuple[str, str]]) -> list[dict[str, Any] | None]:
    """Status polls, (owner id, job id) each, in one SELECT of the jobs with those ids: each poll's row when the job
    is its owner's, else None."""
    assert runtime.read_engine is not None
    async with runtime.database_turn():
        if len(polls) == 1:
            (owner_id, job_id), = polls
            return [next(iter(await fetch_dicts(runtime.read_engine, OWNED_JOB,
                                                {"job_id": job_id, "owner_id": owner_id})), None)]
        rows = await fetch_dicts(runtime.read_engine, JOBS_WITH_IDS, {"ids": list({job_id for _, job_id in polls})})
    found = {row["id"]: row for row in rows}
    answers = []
    for owner_id, job_id in polls:
        row = found.get(job_id)
        answers.append(row if row is not None and row["owner_id"] == owner_id else None)
    return answers


@dataclass
class _KeptPage:
    items: list[JobOut | dict[str, Any]]  # each job as answered, but a running one's row: its ETA moves with time
    total: int
    body: bytes | None = None  # the whole answer, once made, when no job on the page runs


async def page_answer(runtime: Runtime, owner: ApiKey, filters: JobFilters, *, limit: int, offset: int,
                      now: datetime) -> JobPage | Response:
    """A page of the caller's jobs, newest first, and how many match in all. A page read less than
    api_list_cache_seconds ago, with no write through this process since, is answered again
    (api/services/page_cache.py): its jobs as answered then, but for the running ones, whose ETA is computed from
    `now`; with none running, the very bytes answered then."""
    key = (owner.id, filters, limit, offset)
    kept: _KeptPage | None = runtime.pages.get(key)
    if kept is None:
        ticket = runtime.pages.ticket()
        rows, total = await _read_page(runtime, owner, filters, limit=limit, offset=offset)
        kept = _KeptPage([row if row["status"] == JobStatus.RUNNING else JobOut.from_row(row, now) for row in rows],
                         total)
        runtime.pages.put(ticket, key, kept, len(rows))
    if kept.body is not None:
        return Response(kept.body, media_type="application/json")
    page = JobPage(items=[item if isinstance(item, JobOut) else JobOut.from_row(item, now) for item in kept.items],
                   total=kept.total, limit=limit, offset=offset)
    if runtime.pages.enabled and all(isinstance(item, JobOut) for item in kept.items):
        kept.body = _PAGE.dump_json(page)
        return Response(kept.body, media_type="application/json")
    return page


_PAGE = TypeAdapter(JobPage)  # as FastAPI serializes a response_model


async def _read_page(runtime: Runtime, owner: ApiKey, filters: JobFilters, *, limit: int,
                     offset: int) -> tuple[list[dict[str, Any]], int]:
    async with runtime.database_turn():
        if runtime.read_engine is None:
            return await runtime.in_own_session(
                lambda session: jobs.list_jobs(session, owner, filters, limit=limit, offset=offset))
        page, count, params = owned_page_query(owner.id, filters)
        rows = await fetch_dicts(runtime.read_engine, page, {**params, "limit": limit, "offset": offset})
        if rows:
            return rows, int(rows[0]["total"])
        # An empty page says nothing about how many there are before it: the count alone does.
        (counted,) = await fetch_dicts(runtime.read_engine, count, params)
        return [], int(next(iter(counted.values())))
