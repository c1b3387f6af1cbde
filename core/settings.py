"""The one settings object (prefix NARROWNET_), read by api, worker, CLI and Alembic.

Embedded default: everything (SQLite database, SQLite-backed Celery broker, artifacts) lives under
`home`. Production sets NARROWNET_DATABASE_URL (PostgreSQL) and NARROWNET_BROKER_URL (Redis), and, when workers
run on other hosts than the API, NARROWNET_ARTIFACT_URL (S3-compatible object storage).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NARROWNET_", extra="ignore")

    home: Path = Field(default=Path(".narrownet"), description="embedded state: SQLite files, artifacts")
    database_url: str | None = Field(default=None, description="default: SQLite file under home")
    broker_url: str | None = Field(default=None, description="default: SQLite-backed kombu broker under home")
    artifact_dir: Path | None = Field(default=None, description="checkpoints; default: home/artifacts")
    artifact_url: str | None = Field(
        default=None, description="s3://bucket/prefix: checkpoints and datasets in S3-compatible object storage "
                                  "(endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); "
                                  "unset: the local artifact_dir")
    work_dir: Path | None = Field(default=None, description="a worker's local run directories and dataset cache "
                                                            "(and the API's upload staging with S3); default: "
                                                            "home/work")
    data_dir: Path | None = Field(default=None, description="local MNIST IDX / CIFAR python batches")

    database_busy_timeout_seconds: float = Field(
        default=10.0, gt=0, le=30,
        description="longest a request or write waits for the database (a pooled connection, SQLite's write "
                    "lock) before giving up: the API answers 503 database_busy with Retry-After")
    api_db_concurrency: int = Field(
        default=8, ge=1, le=32,
        description="requests of one API process that use the database at once; the rest wait their turn")

    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    max_upload_uncompressed_bytes: int = Field(
        default=1024 * 1024 * 1024, ge=1024,
        description="cap on an uploaded .npz's arrays once decompressed (zip bombs; memory while validating)",
    )
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024, description="cap on JSON request bodies")
    max_queued_jobs_per_user: int = Field(default=100, ge=1, description="queued jobs (not sweep configs) per key")
    max_sweep_configs: int = Field(default=2048, ge=1, le=4096, description="configs one sweep may have (422 above)")
    max_queued_sweep_configs_per_user: int = Field(
        default=10_000, ge=1, description="queued sweep configs one key may have (429 with Retry-After above)")
    rate_limit_per_minute: int = Field(default=600, ge=1, description="requests per key per minute")
    # A revoke still holds at once: every revoke writes a new revocation mark that the cache checks
    # (api/services/key_revocations.py). The lifetime only bounds a revoke whose mark could not be written.
    api_key_cache_seconds: float = Field(
        default=60.0, ge=0, description="an API process keeps a live key this long without asking the database "
        "again (0: never), while no key has been revoked since (a revoke writes a new mark in Redis, or in a file "
        "beside an SQLite database, that every request reads first; with neither, nothing is cached)")
    # A write through the same API process is seen at once (api/services/page_cache.py); this bounds how late
    # GET /v1/jobs shows a change made elsewhere: the worker's progress, another API process.
    api_list_cache_seconds: float = Field(
        default=1.0, ge=0, le=60, description="an API process answers a repeated GET /v1/jobs from the page it read "
        "up to this long ago (0: never); any write request to that process empties its pages first")
    api_list_cache_rows: int = Field(default=5_000, ge=0, description="job rows the list pages kept may hold in all")
    rate_limit_backend: Literal["auto", "memory", "redis"] = Field(
        default="auto", description="where requests are counted: auto = Redis when the broker is Redis (shared "
                                    "by all API replicas), else in the API process")
    rate_limit_redis_url: str | None = Field(default=None, description="Redis for the limiter; default: broker_url")

    metrics_flush_every: int = Field(default=20, ge=1, description="metric points per database batch")
    series_pack_min_points: int = Field(
        default=1000, ge=0,
        description="a job that finishes with at least this many metric points gets them packed per metric for "
                    "charts (0: every job); fewer are read one by one fast enough, and packing costs a small job's "
                    "finish a few milliseconds")
    lease_seconds: float = Field(default=30.0, gt=0, description="a job's lease; renewed by heartbeats")
    reconcile_interval_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    run_migrations_on_start: bool = Field(default=True, description="embedded mode: upgrade schema on start")
    worker_concurrency: int = Field(default=1, ge=1)
    worker_torch_threads: int | None = Field(
        default=None, ge=1, description="torch threads per worker pool process; default: CPU cores / concurrency, "
                                        "and 1 for a job whose steps are small (trainer/threads.py)")
    log_level: str = "INFO"

    # The dashboard (/ui): signed session cookies and live streams.
    session_secret: SecretStr | None = Field(
        default=None, min_length=32,
        description="signs the dashboard's session cookies; default: a random one generated once and kept in "
                    "home/session_secret (0600); set it when several API replicas serve one site")
    session_max_age_seconds: int = Field(default=12 * 3600, ge=1, description="a dashboard sign-in lasts this long")
    events_poll_seconds: float = Field(default=0.5, gt=0, le=10,
                                       description="how often a watched job is read for /v1/jobs/{id}/events")
    events_heartbeat_seconds: float = Field(default=15.0, gt=0, description="comment line on an idle event stream")

    # Client side (narrownet submit/status/...): where the API is and which key to use.
    api_url: str = Field(default="http://127.0.0.1:8000", description="API base URL for the CLI client",
                         validation_alias=AliasChoices("NARROWNET_URL", "NARROWNET_API_URL"))
    api_key: str | None = Field(default=None, description="API key for the CLI client")

    @field_validator("artifact_url")
    @classmethod
    def _artifact_url(cls, value: str | None) -> str | None:
        if not value:  # compose passes an unset variable as ""
            return None
        from core.artifacts.s3 import parse_url  # the one parser, which also says what is wrong

        parse_url(value)
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'narrownet.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.home / 'broker.db').resolve()}"

    @property
    def session_secret_file(self) -> Path:
        return self.home / "session_secret"

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.home / "artifacts").resolve()

    @property
    def resolved_work_dir(self) -> Path:
        return (self.work_dir or self.home / "work").resolve()

    @property
    def upload_staging_dir(self) -> Path:
        # Beside the local store, accepting an upload is a link, not a copy; with S3 it is a local disk.
        return self.resolved_artifact_dir / "tmp" if self.artifact_url is None else self.resolved_work_dir / "uploads"


@lru_cache
def get_settings() -> Settings:
    return Settings()
