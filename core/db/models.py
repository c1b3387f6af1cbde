"""SQLAlchemy 2.0 models. The schema itself is made only by Alembic (migrations/)."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


# Named constraints: Alembic's SQLite batch mode can only drop or alter a constraint it can name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON}


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    # A key is shown once; we keep only sha256(key) (keys are 256-bit random, so no salt/KDF is needed).
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    n_train: Mapped[int] = mapped_column(Integer)
    n_test: Mapped[int] = mapped_column(Integer)
    input_shape: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"train": [...], "test": [...]}
    task: Mapped[str] = mapped_column(String(16))  # "regression" | "classification"
    num_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Outputs of the regression targets (classes for classification); null on rows uploaded before it was kept.
    output_dim: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Sweep(Base):
    """A grid of configs submitted as one (POST /v1/sweeps); each config is a job row carrying sweep_id."""

    __tablename__ = "sweeps"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_sweeps_owner_idempotency"),
        Index("ix_sweeps_owner_created", "owner_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the sweep file: name, base, grid, objective
    axes: Mapped[list[str]] = mapped_column(JSON)  # the grid's dotted paths, in the grid's order
    n_configs: Mapped[int] = mapped_column(Integer)
    objective_metric: Mapped[str] = mapped_column(String(32))
    objective_mode: Mapped[str] = mapped_column(String(8))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency"),
        Index("ix_jobs_owner_created", "owner_id", "created_at"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        Index("ix_jobs_owner_spec_hash", "owner_id", "spec_hash"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    regime: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    queue: Mapped[str] = mapped_column(String(16))
    status: Mapped[JobStatus] = mapped_column(
        SAEnum(JobStatus, name="job_status", values_callable=lambda e: [m.value for m in e],
               native_enum=False, length=16),
        default=JobStatus.QUEUED, index=True,
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # What identifies the result (trainer/fingerprint.py); null when the data's content could not be read.
    spec_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)

    attempt: Mapped[int] = mapped_column(Integer, default=0)  # fencing token: only this attempt may write
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)

    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latest_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    final_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    # A sweep's config: its sweep, its position in the grid, its grid values and the pack it trains in.
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id"), nullable=True, index=True)
    sweep_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    pack_id: Mapped[str | None] = mapped_column(String(48), nullable=True)
    # A sweep config answered by an earlier succeeded job of the same spec_hash (Reuse: succeeded): its result
    # (metrics, checkpoint) is that job's; this row never trains.
    reused_from: Mapped[str | None] = mapped_column(String(32), nullable=True)

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MetricPoint(Base):
    __tablename__ = "metrics"
    # Exactly one row per (job, step): a resumed attempt cannot duplicate a point.
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_metrics_job_step"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MetricSeries(Base):
    """One metric of a finished job as two packed arrays (core/repositories/series.py), written with its outcome:
    a chart of many finished runs reads a row per run instead of a row per point. A job that has rows here has
    them for every metric its points hold a number for; a job still running has none, and is read point by point."""

    __tablename__ = "metric_series"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    points: Mapped[int] = mapped_column(Integer)
    steps: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian int64, ascending
    values: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float64, one per step


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    final: Mapped[bool] = mapped_column(default=False)
    # Relative to the artifact dir, derived from the job id (never from user input).
    relpath: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ThroughputSample(Base):
    """One finished run as a worker measured it: how many FLOPs (trainer/plan's count) in how many seconds.

    The plan's run-time estimate reads the recent samples of a queue and architecture; the worker keeps a window.
    """

    __tablename__ = "throughput_samples"
    __table_args__ = (Index("ix_throughput_samples_queue_arch", "queue", "arch", "recorded_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    queue: Mapped[str] = mapped_column(String(16))
    arch: Mapped[str] = mapped_column(String(16))
    device: Mapped[str] = mapped_column(String(128))  # "cpu", or "cuda: <GPU name>"
    job_id: Mapped[str] = mapped_column(String(32))
    steps: Mapped[int] = mapped_column(Integer)
    flops: Mapped[float] = mapped_column(Float)  # of the steps and evaluations this attempt ran
    flops_per_step: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)  # the training loop, data loaded and model built
    setup_seconds: Mapped[float] = mapped_column(Float)  # from the claim until the loop started
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


__all__ = ["Base", "ApiKey", "Dataset", "Sweep", "Job", "JobStatus", "MetricPoint", "Checkpoint", "ThroughputSample",
           "utcnow", "new_id"]
