"""Security tests: the API tests' apps (real app over httpx's ASGI transport, SQLite file and PostgreSQL) plus
two users, each owning a job with metrics and a real checkpoint file, and a dataset.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from core.db.models import Checkpoint, MetricPoint
from tests.api import conftest as api_tests
from tests.api.conftest import SPEC, Api, ApiFactory

# The API tests' fixtures, for this directory too.
anyio_backend = api_tests.anyio_backend
sqlite_database_url = api_tests.sqlite_database_url
postgres_database_url = api_tests.postgres_database_url
database_url = api_tests.database_url
api_factory = api_tests.api_factory
api = api_tests.api

__all__ = ["SPEC", "Api", "ApiFactory", "User", "make_user", "npz_bytes", "write_checkpoint"]


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def write_checkpoint(artifact_dir: Path, job_id: str, step: int, weights: bytes) -> tuple[str, str]:
    """Put checkpoint files where the worker would (jobs/<id>/ckpt-<step>.*); return (relpath, sha256)."""
    relpath = f"jobs/{job_id}/ckpt-{step:09d}.safetensors"
    path = artifact_dir / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(weights)
    sha256 = hashlib.sha256(weights).hexdigest()
    meta = {"format": "narrownet.checkpoint.v1", "step": step, "sha256": sha256, "spec": SPEC}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return relpath, sha256


@dataclass
class User:
    headers: dict[str, str]
    key: str  # the plaintext API key
    job_id: str
    dataset_id: str

    name: str
    sweep_id: str = ""

    @property
    def ids(self) -> tuple[str, str, str]:
        return self.job_id, self.dataset_id, self.sweep_id

    @property
    def secrets(self) -> tuple[str, ...]:
        """What no one else may ever see: ids, the key, names and checkpoint bytes."""
        return (*self.ids, self.key, f"{self.name}-job", f"{self.name}-data", f"{self.name} weights",
                f"{self.name}-sweep")


async def make_user(api: Api, name: str) -> User:
    """A key that owns a queued job (with metric points and a verified checkpoint), a dataset and a sweep."""
    headers = api.new_user(name)
    job = await api.client.post("/v1/jobs", json={**SPEC, "name": f"{name}-job"}, headers=headers)
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    upload = await api.client.post(
        "/v1/datasets", headers=headers, data={"name": f"{name}-data"},
        files={"file": ("d.npz", npz_bytes(X=np.ones((6, 3), dtype=np.float32), y=np.zeros(6, dtype=np.float32)))})
    assert upload.status_code == 201, upload.text
    relpath, sha256 = write_checkpoint(api.settings.resolved_artifact_dir, job_id, 1, f"{name} weights".encode())
    with api.session() as s:
        s.add_all([MetricPoint(job_id=job_id, step=step, values={"train_loss": 1.0 / step}, attempt=1)
                   for step in (1, 2, 3)])
        s.add(Checkpoint(job_id=job_id, step=1, attempt=1, sha256=sha256, size_bytes=len(f"{name} weights"),
                         relpath=relpath))
    sweep = await api.client.post("/v1/sweeps", headers=headers, json={
        "name": f"{name}-sweep", "base": SPEC, "grid": {"seed": [1, 2]}})
    assert sweep.status_code == 201, sweep.text
    return User(headers=headers, key=headers["Authorization"].removeprefix("Bearer "), job_id=job_id,
                dataset_id=upload.json()["id"], name=name, sweep_id=sweep.json()["id"])


@pytest.fixture
async def alice(api: Api) -> User:
    return await make_user(api, "alice")


@pytest.fixture
async def bob(api: Api) -> User:
    return await make_user(api, "bob")
