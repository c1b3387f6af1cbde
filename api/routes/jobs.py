"""/v1/jobs: submit, list, read, metrics, cancel, checkpoint download."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from api.deps import CurrentKey, RuntimeDep, SessionDep
from api.routes import V1
from api.schemas import JobOut, JobPage, MetricPointOut, MetricSeries, error_responses
from api.services import checkpoints, jobs
from core.db.models import JobStatus, utcnow
from core.repositories.jobs import JobFilters
from trainer.spec import JobSpec

router = APIRouter(prefix=f"{V1}/jobs", tags=["jobs"])

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
           description="same key and same spec -> the same job, never a second run"),
]


# Shown in /docs, and the valid starting points the OpenAPI fuzz test mutates (tests/security).
_SPEC_EXAMPLES = {
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
SpecBody = Annotated[JobSpec, Body(openapi_examples=_SPEC_EXAMPLES)]


@router.post("", status_code=201, response_model=JobOut,
             responses={200: {"model": JobOut, "description": "replay of an Idempotency-Key submission"},
                        **error_responses(401, 409, 413, 422, 429)})
def submit_job(spec: SpecBody, session: SessionDep, key: CurrentKey, runtime: RuntimeDep, response: Response,
               idempotency_key: IdempotencyKey = None) -> JobOut:
    """Submit a training job (the trainer's job spec); it is queued once this request commits."""
    submission = jobs.submit_job(session, key, spec, idempotency_key=idempotency_key,
                                 settings=runtime.settings, enqueue=runtime.enqueue)
    response.headers["Location"] = f"/v1/jobs/{submission.job.id}"
    if not submission.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return JobOut.from_row(submission.job, utcnow())


@router.get("", response_model=JobPage, responses=error_responses(401, 422, 429))
def list_jobs(
    session: SessionDep, key: CurrentKey,
    status: JobStatus | None = None,
    regime: Literal["regular", "constrained"] | None = None,
    name: Annotated[str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] = None,
    sweep_id: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                          description="the configs of one sweep")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> JobPage:
    """Your jobs, newest first, filtered by status, regime, name and sweep."""
    rows, total = jobs.list_jobs(session, key, JobFilters(status=status, regime=regime, name=name, sweep_id=sweep_id),
                                 limit=limit, offset=offset)
    now = utcnow()
    return JobPage(items=[JobOut.from_row(job, now) for job in rows], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(401, 404, 429))
def get_job(job_id: str, session: SessionDep, key: CurrentKey) -> JobOut:
    """One job: status, progress, step, ETA, latest and final metrics, error, timestamps, attempt."""
    return JobOut.from_row(jobs.get_job(session, key, job_id), utcnow())


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


@router.post("/{job_id}/cancel", response_model=JobOut, responses=error_responses(401, 404, 429))
def cancel_job(job_id: str, session: SessionDep, key: CurrentKey) -> JobOut:
    """Cancel (idempotent): a queued job at once, a running one at its next check; finished jobs stay."""
    return JobOut.from_row(jobs.cancel_job(session, key, job_id), utcnow())


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := file.read(checkpoints.CHUNK):
            yield chunk
    finally:
        file.close()


@router.get("/{job_id}/checkpoint", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "the latest checkpoint (safetensors)"},
                       304: {"description": "If-None-Match matched the checkpoint's ETag"},
                       **error_responses(401, 404, 409, 410, 429)})
def download_checkpoint(job_id: str, request: Request, session: SessionDep, key: CurrentKey,
                        runtime: RuntimeDep) -> Response:
    """The latest checkpoint as safetensors; X-Checkpoint-SHA256 and ETag carry its verified sha256."""
    if (tag := request.headers.get("if-none-match")) is not None:
        current = checkpoints.etag(checkpoints.latest_sha256(session, key, job_id))
        if current in {t.strip() for t in tag.split(",")}:
            return Response(status_code=304, headers={"ETag": current})
    verified = checkpoints.open_latest(session, key, job_id, runtime.settings.resolved_artifact_dir)
    headers = {
        "Content-Length": str(verified.size),
        "Content-Disposition": f'attachment; filename="{verified.filename}"',
        "X-Checkpoint-SHA256": verified.sha256,
        "X-Checkpoint-Step": str(verified.step),
        "ETag": checkpoints.etag(verified.sha256),
    }
    return StreamingResponse(_chunks(verified.file), media_type="application/octet-stream", headers=headers)


@router.get("/{job_id}/checkpoint/meta", responses=error_responses(401, 404, 409, 410, 429))
def checkpoint_meta(job_id: str, session: SessionDep, key: CurrentKey, runtime: RuntimeDep) -> dict[str, Any]:
    """The latest checkpoint's metadata JSON: spec, step, metrics, final training loss, sha256, versions."""
    return checkpoints.latest_meta(session, key, job_id, runtime.settings.resolved_artifact_dir)
