"""Dashboard pages: /ui/jobs, /ui/jobs/{id}, /ui/compare, /ui/sweeps, /ui/sweeps/{id}. One template
(api/templates) and one script module (api/static/js) per page; the data comes from the same
services as the REST routes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BeforeValidator

from api.deps import CommittingRoute, SessionDep, SignedInDep
from api.errors import NotFound
from api.pages import METRIC_TITLES, run_label, templates
from api.schemas import JobOut
from api.services import checkpoints, jobs, series, sweep_tables, sweeps
from api.services.signin import SignedIn
from core.db.models import JobStatus, utcnow
from core.repositories.jobs import JobFilters

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=CommittingRoute)

PAGE_SIZE = 50
SweepId = Annotated[str, Query(max_length=64, pattern=r"^([A-Za-z0-9_-]+)?$")]


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value  # a filter form's "any" choice


Blank = BeforeValidator(_blank_is_none)


def _render(request: Request, who: SignedIn, template: str, status_code: int = 200, **context: Any) -> Response:
    return templates.TemplateResponse(request, template, {
        "csrf_token": who.csrf_token, "user": who.key.name, **context}, status_code=status_code)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request, session: SessionDep, who: SignedInDep,
    status: Annotated[JobStatus | None, Blank] = None,
    regime: Annotated[Literal["regular", "constrained"] | None, Blank] = None,
    name: Annotated[str, Query(max_length=128, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")] = "",
    sweep_id: SweepId = "",
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    """The user's jobs, newest first, filtered and paged on the server; kept live by jobs.js."""
    rows, total = jobs.list_jobs(session, who.key, JobFilters(status=status, regime=regime, name=name or None,
                                                              sweep_id=sweep_id or None),
                                 limit=PAGE_SIZE, offset=offset)
    now = utcnow()
    filters = {"status": status.value if status else "", "regime": regime or "", "name": name, "sweep_id": sweep_id}
    return _render(request, who, "jobs.html", jobs=[JobOut.from_row(j, now) for j in rows], total=total,
                   offset=offset, limit=PAGE_SIZE, filters=filters,
                   query=urlencode({k: v for k, v in filters.items() if v}), statuses=[s.value for s in JobStatus])


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request, session: SessionDep, who: SignedInDep) -> Response:
    """One job: spec, status, live curves (job.js follows /v1/jobs/{id}/events), cancel, checkpoint."""
    job = JobOut.from_row(jobs.get_job(session, who.key, job_id), utcnow())
    checkpoint = checkpoints.latest_recorded(session, who.key, job.id)
    return _render(request, who, "job.html", job=job, checkpoint=checkpoint, label=run_label(job.spec))


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, session: SessionDep, who: SignedInDep,
                 ids: Annotated[list[str], Query(max_length=series.MAX_JOBS)]) -> Response:
    """Chosen jobs' curves overlaid (compare.js reads /v1/series), coloured by regime."""
    chosen = jobs.get_jobs(session, who.key, series.parse_job_ids(",".join(ids)))
    now = utcnow()
    runs = [{"id": j.id, "name": j.name, "regime": j.regime, "status": JobOut.from_row(j, now).status,
             **run_label(j.spec)} for j in chosen]
    return _render(request, who, "compare.html", runs=runs)


@router.get("/sweeps", response_class=HTMLResponse)
def sweeps_page(request: Request, session: SessionDep, who: SignedInDep,
                offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> Response:
    """The user's sweeps, newest first: status, counts, progress, best so far; kept live by sweeps.js."""
    items, total = sweeps.list_sweeps(session, who.key, limit=PAGE_SIZE, offset=offset)
    return _render(request, who, "sweeps.html", sweeps=items, total=total, offset=offset, limit=PAGE_SIZE)


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(sweep_id: str, request: Request, session: SessionDep, who: SignedInDep) -> Response:
    """One sweep: progress and its Figure-4 heatmaps (sweep.js draws /v1/sweeps/{id}/summary), linked to its jobs."""
    try:
        sweep = sweeps.sweep_out(session, sweeps.get_sweep(session, who.key, sweep_id), utcnow())
    except NotFound as exc:  # another user's sweep is as absent as one that never existed
        return _render(request, who, "not_found.html", message=exc.message, back="/ui/sweeps", status_code=404)
    rows, cols, split = sweep_tables.figure4_axes(sweep.axes)
    view = {"sweep_id": sweep.id, "axes": sweep.axes, "rows": rows, "cols": cols, "split": split,
            "objective": sweep.objective.model_dump(), "status": sweep.status}
    return _render(request, who, "sweep.html", sweep=sweep, view=view, metrics=METRIC_TITLES)
