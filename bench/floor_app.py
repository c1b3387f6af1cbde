"""The framework floor for bench_service.py --floor: the service's own app (middleware, key check, rate limit,
error handlers) plus two routes under /floor that do what any submission or list page has to do, and nothing
else. No database, no broker: what they cost is the least a real POST /v1/jobs or GET /v1/jobs can cost in this
process model, so their throughput against /healthz bounds the goals in issue 13 from above.

    POST /floor/jobs  a JobSpec body, validated as POST /v1/jobs validates it; answers 201 with the JobOut the
                      job's row would give (the row is built in memory, as the insert builds it).
    GET  /floor/jobs  a JobPage of `limit` JobOut (default 20), each built from a row per request as the real
                      list builds them, from rows made once at start.

Served only by the benchmark (`uvicorn bench.floor_app:create_app --factory`); the service never mounts it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query

from api.app import create_app as create_service_app
from api.app import tune_collector
from api.deps import CurrentKey
from api.schemas import JobOut, JobPage
from api.services.jobs import request_hash
from core.db.models import JobStatus, new_id, utcnow
from core.queue import queue_for
from trainer.spec import JobSpec

PAGE_SPEC = {
    "name": "bench", "regime": "constrained", "model": {"arch": "shallow", "width": 8},
    "data": {"source": "synthetic", "n": 16, "d": 4},
    "optim": {"name": "gd", "lr": 0.1, "iterations": 10}, "metrics_every": 10,
}


def job_row(spec: JobSpec, digest: str) -> dict[str, Any]:
    """The columns JobOut reads, as a queued job's row holds them right after its insert."""
    now = utcnow()
    return {
        "id": new_id(), "name": spec.name, "regime": spec.regime, "status": JobStatus.QUEUED, "queue": queue_for(spec),
        "step": 0, "total_steps": spec.optim.iterations, "latest_metrics": None, "final_metrics": None,
        "error": None, "attempt": 0, "cancel_requested": False, "created_at": now, "started_at": None,
        "updated_at": now, "finished_at": None, "spec": spec.model_dump(mode="json"), "spec_hash": digest,
        "sweep_id": None, "params": None, "reused_from": None,
    }


def floor_router() -> APIRouter:
    router = APIRouter(prefix="/floor")
    page_spec = JobSpec.model_validate(PAGE_SPEC)
    rows = [job_row(page_spec, request_hash(page_spec)) for _ in range(200)]

    @router.post("/jobs", status_code=201, response_model=JobOut)
    async def submit(spec: JobSpec, key: CurrentKey) -> JobOut:
        return JobOut.from_row(job_row(spec, request_hash(spec)), utcnow())

    @router.get("/jobs", response_model=JobPage)
    async def page(key: CurrentKey, status: JobStatus | None = None,
                   limit: Annotated[int, Query(ge=1, le=200)] = 20,
                   offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> JobPage:
        now = utcnow()
        items = [JobOut.from_row(row, now) for row in rows[:limit]]
        return JobPage(items=items, total=len(rows), limit=limit, offset=offset)

    return router


def create_app() -> FastAPI:
    app = create_service_app()
    app.include_router(floor_router())
    tune_collector()  # as the service's own server process does (api.app.create_server_app)
    return app
