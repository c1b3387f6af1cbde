"""API tests: the real app over httpx's ASGI transport, a real database (SQLite file and a fresh PostgreSQL
database) and a real broker (kombu's SQLite transport, one file per test, read back with kombu).

Each backend's database is made once per session by the migrations; tests stay apart by creating their own
API keys (every query is scoped to its owner), and each test gets its own artifact dir, broker and app.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session

from api.app import create_app
from api.runtime import Runtime
from api.services.keys import create_key
from core.db.migrate import upgrade
from core.db.models import Job
from core.settings import Settings
from tests.broker import drain_queue
from tests.service_guard import temporary_postgres_database

SPEC: dict[str, Any] = {
    "name": "tiny",
    "regime": "constrained",
    "model": {"arch": "shallow", "width": 4},
    "data": {"source": "synthetic", "n": 8, "d": 3},
    "optim": {"name": "gd", "lr": 0.1, "iterations": 10},
}


def spec(**changes: Any) -> dict[str, Any]:
    return {**SPEC, **changes}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sqlite_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('api-db') / 'narrownet.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    with temporary_postgres_database("narrownet_api_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.service)])
def database_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_database_url")


def make_settings(home: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home,
        "database_url": database_url,
        "broker_url": f"sqla+sqlite:///{home / 'broker.db'}",
        "artifact_dir": home / "artifacts",
        "run_migrations_on_start": False,
        "rate_limit_per_minute": 10_000,
        "max_queued_jobs_per_user": 100,
        "max_request_bytes": 1024 * 1024,
        "max_upload_bytes": 8 * 1024 * 1024,
    }
    return Settings(**{**values, **overrides})


@dataclass
class Api:
    """One app under test and the handles a test needs around it."""

    app: FastAPI
    client: httpx.AsyncClient

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def session(self) -> AbstractContextManager[Session]:
        """A committing session on the app's own database (for arranging rows and reading them back)."""
        return self.runtime.sessions.begin()

    def new_user(self, name: str = "user") -> dict[str, str]:
        """Create an API key; return the headers that authenticate with it."""
        with self.session() as s:
            _, plaintext = create_key(s, name)
        return {"Authorization": f"Bearer {plaintext}"}

    def owner_id(self, headers: dict[str, str]) -> str:
        from core.repositories.keys import get_active_by_hash

        plaintext = headers["Authorization"].removeprefix("Bearer ")
        with self.session() as s:
            key = get_active_by_hash(s, hashlib.sha256(plaintext.encode()).hexdigest())
            assert key is not None
            return key.id

    def update_job(self, job_id: str, **values: Any) -> None:
        with self.session() as s:
            job = s.get(Job, job_id)
            assert job is not None
            for name, value in values.items():
                setattr(job, name, value)

    def drain_queue(self, name: str) -> list[Any]:
        """Consume every message waiting in broker queue `name` (kombu, as a worker would)."""
        return drain_queue(self.settings.resolved_broker_url, name)


ApiFactory = Callable[..., AbstractAsyncContextManager[Api]]


@pytest.fixture
def api_factory(tmp_path: Path, database_url: str) -> ApiFactory:
    """`async with api_factory(rate_limit_per_minute=3) as api:` an app with those settings changed."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Api]:
        app = create_app(make_settings(tmp_path, database_url, **overrides))
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield Api(app=app, client=client)
        finally:
            await app.state.runtime.aclose()
            app.state.runtime.close()

    return factory


@pytest.fixture
async def api(api_factory: ApiFactory) -> AsyncIterator[Api]:
    async with api_factory() as made:
        yield made
