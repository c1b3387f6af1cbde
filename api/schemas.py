"""Response models (the request body of POST /v1/jobs is trainer.spec.JobSpec itself)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from core.db.models import Dataset, Job, JobStatus
from trainer.plan import (
    Advice,
    CheckpointEstimate,
    ComputeCost,
    MemoryEstimate,
    ParameterCounts,
    WidthPosition,
)


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; every stored time is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


# ------------------------------------------------------------------------------------------------ errors
class FieldErrorOut(BaseModel):
    field: str = Field(examples=["model.width"])
    reason: str


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str
    fields: list[FieldErrorOut] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer, all in the one shape."""
    return {status: {"model": ErrorResponse} for status in statuses}


# -------------------------------------------------------------------------------------------------- jobs
# A job as the ORM loads it, or a row of the jobs table's columns by name (api/services/job_reads.py).
JobRow = Job | Mapping[str, Any]


class JobOut(BaseModel):
    id: str
    name: str
    regime: str
    status: JobStatus
    queue: str
    progress: float = Field(ge=0, le=1, description="step / total_steps (1 when succeeded)")
    step: int
    total_steps: int | None
    eta_seconds: float | None = Field(description="while running: remaining steps at the rate so far")
    latest_metrics: dict[str, Any] | None
    final_metrics: dict[str, Any] | None
    error: str | None
    attempt: int
    cancel_requested: bool
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    updated_at: UtcDatetime
    finished_at: UtcDatetime | None
    spec: dict[str, Any]
    spec_hash: str | None = Field(description="sha256 of the canonical spec, the data's content and the versions "
                                              "that change results; null when the data's content was unreadable")
    sweep_id: str | None = Field(default=None, description="the sweep this job is a config of")
    params: dict[str, Any] | None = Field(default=None, description="its values of the sweep's grid axes")
    reused_from: str | None = Field(default=None, description="a sweep config that did not train: the id of your "
                                                              "earlier succeeded job of the same spec_hash whose "
                                                              "result (metrics, checkpoint) it carries")

    @classmethod
    def from_row(cls, job: JobRow, now: datetime) -> JobOut:
        values = _Attributes(job) if isinstance(job, Job) else job
        fields = {name: values[name] for name in _COPIED}
        return cls(**fields, progress=progress(values), eta_seconds=eta_seconds(values, now))


_COPIED = ("id", "name", "regime", "status", "queue", "step", "total_steps", "latest_metrics", "final_metrics", "error",
           "attempt", "cancel_requested", "created_at", "started_at", "updated_at", "finished_at", "spec", "spec_hash",
           "sweep_id", "params", "reused_from")


class _Attributes(Mapping[str, Any]):
    """An ORM object's attributes as a read-only mapping."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def __getitem__(self, name: str) -> Any:
        return getattr(self.job, name)

    def __iter__(self) -> Iterator[str]:
        return iter(_COPIED)

    def __len__(self) -> int:
        return len(_COPIED)


def progress(job: Mapping[str, Any]) -> float:
    if job["status"] == JobStatus.SUCCEEDED:
        return 1.0
    if not job["total_steps"]:
        return 0.0
    return float(min(max(job["step"] / job["total_steps"], 0.0), 1.0))


def eta_seconds(job: Mapping[str, Any], now: datetime) -> float | None:
    step, total, started = job["step"], job["total_steps"], job["started_at"]
    if job["status"] != JobStatus.RUNNING or not total or step <= 0 or started is None:
        return None
    elapsed = (_as_utc(now) - _as_utc(started)).total_seconds()
    if elapsed <= 0:
        return None
    return round(float(elapsed / step * max(total - step, 0)), 3)


class JobPage(BaseModel):
    items: list[JobOut]
    total: int = Field(description="jobs matching the filters, over all pages")
    limit: int
    offset: int


class MetricPointOut(BaseModel):
    step: int
    values: dict[str, Any]


class MetricSeries(BaseModel):
    job_id: str
    points: list[MetricPointOut]
    next_since_step: int | None = Field(
        description="pass as since_step to read on from here; null when no point was returned")


class SeriesOut(BaseModel):
    job_id: str
    steps: list[int]
    values: list[float]


class SeriesPage(BaseModel):
    metric: str
    points: int | None = Field(description="the reduction asked for; null: full resolution")
    series: list[SeriesOut]


# ---------------------------------------------------------------------------------------------- datasets
class DatasetOut(BaseModel):
    id: str
    name: str
    sha256: str
    size_bytes: int
    n_train: int
    n_test: int
    input_shape: dict[str, Any]
    task: str
    num_classes: int | None
    output_dim: int | None = Field(description="outputs of the model trained on it (classes or target columns); "
                                               "null for uploads from before it was recorded")
    created_at: UtcDatetime

    @classmethod
    def from_row(cls, dataset: Dataset) -> DatasetOut:
        return cls.model_validate(dataset, from_attributes=True)


class DatasetPage(BaseModel):
    items: list[DatasetOut]
    total: int
    limit: int
    offset: int


# ------------------------------------------------------------------------------------------------ health
class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]


# -------------------------------------------------------------------------------------------------- plan
class DataShapeOut(BaseModel):
    n_train: int
    n_test: int
    sample_shape: list[int]
    outputs: int = Field(description="classes, or regression outputs")
    task: str


class QueueState(BaseModel):
    name: str = Field(description="the queue the job would go to (core.queue.queue_for)")
    queued: int = Field(description="jobs of every user waiting on it now: the depth ahead of this one")
    running: int
    yours_queued: int
    yours_cap: int = Field(description="queued jobs one key may have; a submit at the cap is refused with 429")


class RunEstimate(BaseModel):
    seconds: float | None = Field(description="estimated run time, from claim to finish; null: no estimate yet")
    setup_seconds: float | None = Field(description="loading data and building the model (median of the samples)")
    flops_per_second: float | None = Field(description="median measured rate of the samples used")
    samples: int = Field(description="finished runs the estimate rests on")
    devices: list[str]
    basis: str


class PlanOut(BaseModel):
    """What a job would be, counted before anything is queued (POST /v1/plan, POST /v1/jobs?dry_run=true)."""

    spec: dict[str, Any] = Field(description="the spec as it would run (an uploaded dataset's name resolved)")
    spec_hash: str | None
    reusable_job_id: str | None = Field(description="your succeeded job with the same spec_hash: submit with the "
                                                    "header 'Reuse: succeeded' to get it back instead of training")
    data: DataShapeOut | None
    width: WidthPosition | None
    parameters: ParameterCounts | None
    compute: ComputeCost | None
    memory: MemoryEstimate | None
    checkpoint: CheckpointEstimate | None
    queue: QueueState
    estimate: RunEstimate
    warnings: list[Advice]
