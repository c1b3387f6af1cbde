"""The one settings object (prefix NARROWNET_), read by api, worker, CLI and Alembic.

Embedded default: everything (SQLite database, SQLite-backed Celery broker, artifacts) lives under
`home`. Production sets NARROWNET_DATABASE_URL (PostgreSQL) and NARROWNET_BROKER_URL (Redis).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NARROWNET_", extra="ignore")

    home: Path = Field(default=Path(".narrownet"), description="embedded state: SQLite files, artifacts")
    database_url: str | None = Field(default=None, description="default: SQLite file under home")
    broker_url: str | None = Field(default=None, description="default: SQLite-backed kombu broker under home")
    artifact_dir: Path | None = Field(default=None, description="checkpoints; default: home/artifacts")
    data_dir: Path | None = Field(default=None, description="local MNIST IDX / CIFAR python batches")

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
    rate_limit_backend: Literal["auto", "memory", "redis"] = Field(
        default="auto", description="where requests are counted: auto = Redis when the broker is Redis (shared "
                                    "by all API replicas), else in the API process")
    rate_limit_redis_url: str | None = Field(default=None, description="Redis for the limiter; default: broker_url")

    metrics_flush_every: int = Field(default=20, ge=1, description="metric points per database batch")
    lease_seconds: float = Field(default=30.0, gt=0, description="a job's lease; renewed by heartbeats")
    reconcile_interval_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    run_migrations_on_start: bool = Field(default=True, description="embedded mode: upgrade schema on start")
    worker_concurrency: int = Field(default=1, ge=1)
    worker_torch_threads: int | None = Field(
        default=None, ge=1, description="torch threads per worker pool process; default: CPU cores / concurrency")
    log_level: str = "INFO"

    # Client side (narrownet submit/status/...): where the API is and which key to use.
    api_url: str = Field(default="http://127.0.0.1:8000", description="API base URL for the CLI client",
                         validation_alias=AliasChoices("NARROWNET_URL", "NARROWNET_API_URL"))
    api_key: str | None = Field(default=None, description="API key for the CLI client")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'narrownet.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.home / 'broker.db').resolve()}"

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.home / "artifacts").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
