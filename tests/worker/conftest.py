"""Worker tests: run_job against a real database, SQLite and PostgreSQL (a fresh database per session)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.artifacts.keys import checkpoint_key, meta_key
from core.artifacts.store import ArtifactStore, store_for
from core.db.migrate import upgrade
from core.db.models import ApiKey, Job
from core.db.session import make_engine
from core.repositories.jobs import ClaimedJob
from core.settings import Settings
from tests.service_guard import temporary_postgres_database
from worker.job_store import JobStore


@dataclass
class WorkerDb:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]

    def settings_with(self, **changes: Any) -> Settings:
        return self.settings.model_copy(update=changes)

    def add_owner(self) -> str:
        key = secrets.token_urlsafe(32)
        with self.sessions.begin() as s:
            row = ApiKey(name="worker-test", key_hash=hashlib.sha256(key.encode()).hexdigest(),
                         prefix=key[:8])
            s.add(row)
            s.flush()
            return row.id

    def add_job(self, spec: dict[str, Any], *, owner_id: str | None = None, **fields: Any) -> str:
        owner_id = owner_id or self.add_owner()
        with self.sessions.begin() as s:
            job = Job(owner_id=owner_id, name=spec.get("name", "job"), regime=spec["regime"], spec=spec,
                      queue="cpu", **fields)
            s.add(job)
            s.flush()
            return job.id

    def job(self, job_id: str) -> Job:
        with self.sessions() as s:
            job = s.get(Job, job_id)
            assert job is not None
            return job

    @property
    def artifacts(self) -> ArtifactStore:
        return store_for(self.settings)

    def job_store(self, job: ClaimedJob) -> JobStore:
        return JobStore(self.sessions, job, lease_seconds=30.0, artifacts=self.artifacts,
                        work_dir=self.settings.resolved_work_dir)

    def publish(self, job_id: str, attempt: int, weights: Path) -> str:
        """Put a checkpoint the trainer wrote into the store, as that attempt's worker would; return its key."""
        key = checkpoint_key(job_id, attempt, int(weights.stem.removeprefix("ckpt-")))
        self.artifacts.put_file(key, weights)
        self.artifacts.put_file(meta_key(key), weights.with_suffix(".json"))
        return key

    def job_dir(self, job_id: str) -> Path:
        """The local run directory the worker trains this job in."""
        return self.settings.resolved_work_dir / "jobs" / job_id


@pytest.fixture(scope="session")
def _sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('worker-sqlite') / 'narrownet.db'}"


@pytest.fixture(scope="session")
def _postgresql_url() -> Iterator[str]:
    with temporary_postgres_database("narrownet_worker") as url:
        yield url


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.service)]


@pytest.fixture(scope="session", params=BACKENDS)
def worker_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerDb]:
    url = request.getfixturevalue(f"_{request.param}_url")
    upgrade(url)
    home = tmp_path_factory.mktemp(f"worker-home-{request.param}")
    # Every finished job's series packed, however few its points (test_series_packing.py tests the threshold).
    settings = Settings(home=home, database_url=url, metrics_flush_every=4, lease_seconds=30.0,
                        max_attempts=3, series_pack_min_points=0)
    engine = make_engine(url)
    yield WorkerDb(settings, engine, sessionmaker(bind=engine, expire_on_commit=False))
    engine.dispose()


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    """A shallow job that trains in well under a second on CPU."""
    spec: dict[str, Any] = {
        "name": "tiny", "regime": "constrained",
        "model": {"arch": "shallow", "width": 8},
        "data": {"source": "synthetic", "n": 24, "d": 4, "seed": 1},
        "optim": {"name": "gd", "lr": 0.1, "momentum": 0.9, "iterations": 200},
        "metrics_every": 20, "checkpoint_every": 100,
    }
    spec.update(overrides)
    return spec


def dataset_spec(dataset_id: str, **overrides: Any) -> dict[str, Any]:
    return tiny_spec(data={"source": "dataset", "id": dataset_id}, **overrides)
