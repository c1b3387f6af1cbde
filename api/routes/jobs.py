"""/v1/jobs: submit, list, read, metrics, live events, cancel, checkpoint download."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import CommittingRoute, CurrentKey, RuntimeDep, SessionDep, in_transaction
from api.routes import V1
from api.schemas import JobOut, JobPage, MetricPointOut, MetricSeries, PlanOut, error_responses
from api.services import checkpoints, job_reads, job_writes, jobs, plan
from core.db.models import JobStatus, utcnow
from core.repositories.jobs import JobFilters
from trainer.spec import JobSpec

router = APIRouter(prefix=f"{V1}/jobs", tags=["jobs"], route_class=CommittingRoute)

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
           description="same key and same spec -> the same job, never a second run"),
]


# Shown in /docs, and the valid starting points the OpenAPI fuzz test mutates (tests/security).
SPEC_EXAMPLES = {
    "shallow-constrained": {"summary": "shallow net, constrained regime, synthetic data", "value": {
        "name": "narrow-demo", "regime": "constrained", "model": {"arch": "shallow", "width": 8},
        "data": {"source": "synthetic", "n": 32, "d": 4}, "optim": {"name": "gd", "lr": 0.1, "iterations": 50},
        "constraint": {"radius": 1.0}, "metrics_every": 10,
    }},
    "mlp-digits": {"summary": "MLP on sklearn digits, regular regime, SGD by epochs", "value": {
        "name": "digits-mlp", "regime": "regular", "model": {"arch": "mlp", "hidden": [64, 32]},
        "data": {"source": "digits", "test_fraction": 0.2}, "loss": "cross_entropy",
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64, "epochs": 2},
    }},
}
SpecBody = Annotated[JobSpec, Body(openapi_examples=SPEC_EXAMPLES)]
# A header, not a body field: the body stays the trainer's JobSpec, which forbids unknown fields.
ReuseHeader = Annotated[
    Literal["succeeded"] | None,
    Header(alias="Reuse", description="'succeeded': answer with your succeeded job of the same spec_hash (200, "
                                      "header Reused: true) instead of training again, when there is one"),
]
DryRun = Annotated[bool, Query(description="answer with the plan (as POST /v1/plan) and queue nothing")]


@router.post("", status_code=201, response_model=JobOut,
             responses={200: {"model": JobOut | PlanOut,
                              "description": "replay of an Idempotency-Key submission, a reused job (Reused: true), "
                                             "or with dry_run=true the plan"},
                        **error_responses(401, 409, 413, 422, 429)})
async def submit_job(spec: SpecBody, key: CurrentKey, runtime: RuntimeDep, response: Response,
                     idempotency_key: IdempotencyKey = None, reuse: ReuseHeader = None,
                     dry_run: DryRun = False) -> JobOut | JSONResponse:
    """Submit a training job (the trainer's job spec); it is queued once this request commits."""
    if dry_run:
        answer = await in_transaction(runtime, lambda s: plan.plan(s, key, spec, runtime.settings, runtime.artifacts))
        return JSONResponse(answer.model_dump(mode="json"))
    if reuse is None and job_writes.is_plain(runtime, spec):
        row = await job_writes.submit_plain(runtime, key, spec, idempotency_key)
        if row is not None:
            response.headers["Location"] = f"/v1/jobs/{row['id']}"
            return JobOut.from_row(row, utcnow())
    submission = await in_transaction(runtime, lambda s: jobs.submit_job(
        s, key, spec, idempotency_key=idempotency_key, settings=runtime.settings, enqueue=runtime.enqueue,
        reuse_from=runtime.artifacts if reuse == "succeeded" else None))
    response.headers["Location"] = f"/v1/jobs/{submission.job.id}"
    if submission.reused:
        response.status_code = 200
        response.headers["Reused"] = "true"
    elif not submission.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return JobOut.from_row(submission.job, utcnow())


@router.get("", response_model=JobPage, responses=error_responses(401, 422, 429))
async def list_jobs(
    runtime: RuntimeDep, key: CurrentKey,
    status: JobStatus | None = None,
    regime: Literal["regular", "constrained"] | None = None,
    name: Annotated[str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] = None,
    id_prefix: Annotated[str | None, Query(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$",
                                           description="jobs whose id starts with this (short ids, like git)")] = None,
    spec_hash: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$",
                                           description="jobs whose result would be the same (see JobOut.spec_hash)")
                         ] = None,
    sweep_id: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                          description="the configs of one sweep")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> JobPage | Response:
    """Your jobs, newest first, filtered by status, regime, name, id prefix, spec_hash and sweep."""
    filters = JobFilters(status=status, regime=regime, name=name, id_prefix=id_prefix, spec_hash=spec_hash,
                         sweep_id=sweep_id)
    return await job_reads.page_answer(runtime, key, filters, limit=limit, offset=offset, now=utcnow())


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(401, 404, 429))
async def get_job(job_id: str, runtime: RuntimeDep, key: CurrentKey) -> JobOut:
    """One job: status, progress, step, ETA, latest and final metrics, error, timestamps, attempt."""
    return JobOut.from_row(await job_reads.owned_job(runtime, key, job_id), utcnow())


@router.get("/{job_id}/metrics", response_model=MetricSeries, responses=error_responses(401, 404, 422, 429))
def get_metrics(
    job_id: str, session: SessionDep, key: CurrentKey,
    since_step: Annotated[int | None, Query(ge=-1, le=2**31 - 1, description="only points after this step")] = None,
    every: Annotated[int, Query(ge=1, le=1_000_000, description="keep every k-th point of the series")] = 1,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> MetricSeries:
    """The job's metric time series in step order."""
    points = jobs.metric_points(session, key, job_id, since_step=since_step, every=every, limit=limit)
    return MetricSeries(job_id=job_id, points=[MetricPointOut(step=s, values=v) for s, v in points],
                        next_since_step=points[-1][0] if points else None)


LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=32, pattern=r"^-?[0-9]+$",
                                           description="sent by a reconnecting EventSource: resume after this step")]


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": (
                "server-sent events: `status` (the job, as GET /v1/jobs/{id}) and `metrics` ({points: [...]}, "
                "`id:` = the step of its last point); a comment line every ~15 s; ends when the job does")},
                       **error_responses(401, 404, 422, 429)})
def job_events(
    job_id: str, session: SessionDep, key: CurrentKey, runtime: RuntimeDep,
    since_step: Annotated[int | None, Query(ge=-1, le=2**31 - 1, description="only points after this step")] = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Follow a job live: its stored points after since_step (or Last-Event-ID), then each new batch."""
    job = jobs.get_job(session, key, job_id)
    after = int(last_event_id) if last_event_id is not None else since_step
    # The session closes when this returns: the stream holds no database connection (see job_events).
    return StreamingResponse(runtime.events.stream(job.id, after), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/{job_id}/cancel", response_model=JobOut, responses=error_responses(401, 404, 429))
def cancel_job(job_id: str, session: SessionDep, key: CurrentKey) -> JobOut:
    """Cancel (idempotent): a queued job at once, a running one at its next check; finished jobs stay."""
    return JobOut.from_row(jobs.cancel_job(session, key, job_id), utcnow())


@router.get("/{job_id}/checkpoint", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "the latest checkpoint (safetensors)"},
                       304: {"description": "If-None-Match matched the checkpoint's ETag"},
                       **error_responses(401, 404, 409, 410, 429, 503)})
def download_checkpoint(job_id: str, request: Request, session: SessionDep, key: CurrentKey,
                        runtime: RuntimeDep) -> Response:
    """The latest checkpoint as safetensors; X-Checkpoint-SHA256 and ETag carry its verified sha256."""
    if (tag := request.headers.get("if-none-match")) is not None:
        current = checkpoints.etag(checkpoints.latest_sha256(session, key, job_id))
        if current in {t.strip() for t in tag.split(",")}:
            return Response(status_code=304, headers={"ETag": current})
    verified = checkpoints.open_latest(session, key, job_id, runtime.artifacts)
    headers = {
        "Content-Length": str(verified.size),
        "Content-Disposition": f'attachment; filename="{verified.filename}"',
        "X-Checkpoint-SHA256": verified.sha256,
        "X-Checkpoint-Step": str(verified.step),
        "ETag": checkpoints.etag(verified.sha256),
    }
    return StreamingResponse(verified.chunks(), media_type="application/octet-stream", headers=headers)


@router.get("/{job_id}/checkpoint/meta", responses=error_responses(401, 404, 409, 410, 429, 503))
def checkpoint_meta(job_id: str, session: SessionDep, key: CurrentKey, runtime: RuntimeDep) -> dict[str, Any]:
    """The latest checkpoint's metadata JSON: spec, step, metrics, final training loss, sha256, versions."""
    return checkpoints.latest_meta(session, key, job_id, runtime.artifacts)
