"""The API on an S3 artifact store (moto's server on loopback) and no shared directory: uploads go to the store,
checkpoints are streamed from it verified (nothing held whole in memory), a tampered object is a 409, and every
request that needs a store that is down is a 503 with Retry-After."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from api.services import checkpoints
from api.services.keys import authenticate
from core.artifacts.keys import checkpoint_key, dataset_key, meta_key
from core.db.models import Checkpoint
from tests.api.conftest import SPEC, Api, ApiFactory
from tests.s3 import Bucket, s3_bucket, s3_server

pytestmark = pytest.mark.anyio
__all__ = ["s3_bucket", "s3_server"]  # fixtures

MiB = 1 << 20


@pytest.fixture
async def api(api_factory: ApiFactory, s3_bucket: Bucket, tmp_path: Path) -> AsyncIterator[Api]:
    async with api_factory(artifact_url=s3_bucket.url, work_dir=tmp_path / "api-work") as made:
        yield made


def npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=np.ones((6, 3), dtype=np.float32), y=np.zeros(6, dtype=np.float32))
    return buffer.getvalue()


async def job_with_checkpoint(api: Api, bucket: Bucket, weights: bytes) -> tuple[dict[str, str], str, str]:
    """A job whose worker (elsewhere) published a checkpoint to the store and recorded it."""
    user = api.new_user()
    job_id = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
    key, sha256 = checkpoint_key(job_id, 1, 7), hashlib.sha256(weights).hexdigest()
    bucket.write(key, weights)
    bucket.write(meta_key(key), json.dumps({"format": "narrownet.checkpoint.v1", "step": 7, "sha256": sha256,
                                            "spec": SPEC}).encode())
    with api.session() as s:
        s.add(Checkpoint(job_id=job_id, step=7, attempt=1, sha256=sha256, size_bytes=len(weights), relpath=key))
    return user, job_id, key


async def test_an_upload_lands_in_the_store_under_its_server_made_id(api: Api, s3_bucket: Bucket) -> None:
    user = api.new_user()
    data = npz()
    response = await api.client.post("/v1/datasets", files={"file": ("../../evil name.npz", data)},
                                      data={"name": "toy"}, headers=user)
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    assert s3_bucket.object_keys() == [f"{s3_bucket.prefix}/{dataset_key(dataset_id)}"]
    assert s3_bucket.read(dataset_key(dataset_id)) == data
    assert list(api.settings.upload_staging_dir.iterdir()) == []  # the staging file is gone
    assert not api.settings.resolved_artifact_dir.exists()  # no local artifact directory at all


async def test_a_checkpoint_is_streamed_from_the_store_verified_without_holding_it(api: Api,
                                                                                   s3_bucket: Bucket) -> None:
    weights = os.urandom(48 * MiB)
    user, job_id, _ = await job_with_checkpoint(api, s3_bucket, weights)
    response = await api.client.get(f"/v1/jobs/{job_id}/checkpoint", headers=user)
    assert response.status_code == 200 and response.content == weights
    assert response.headers["x-checkpoint-sha256"] == hashlib.sha256(weights).hexdigest()

    # The route's own path, measured without the test client (httpx's ASGI transport buffers whole bodies).
    digest, size = hashlib.sha256(), 0
    with api.session() as s:
        owner = authenticate(s, user["Authorization"].removeprefix("Bearer "))
        assert owner is not None
        tracemalloc.start()
        try:
            verified = checkpoints.open_latest(s, owner, job_id, api.runtime.artifacts)
            for chunk in verified.chunks():
                digest.update(chunk)
                size += len(chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert (size, digest.hexdigest()) == (len(weights), hashlib.sha256(weights).hexdigest())
    assert peak < 16 * MiB, f"peak {peak / MiB:.0f} MiB while serving a {len(weights) // MiB} MiB checkpoint"
    meta = await api.client.get(f"/v1/jobs/{job_id}/checkpoint/meta", headers=user)
    assert meta.status_code == 200 and meta.json()["step"] == 7


async def test_a_tampered_checkpoint_is_a_409_never_the_bytes(api: Api, s3_bucket: Bucket) -> None:
    user, job_id, key = await job_with_checkpoint(api, s3_bucket, b"the real weights")
    s3_bucket.write(key, b"the fake weights")
    response = await api.client.get(f"/v1/jobs/{job_id}/checkpoint", headers=user)
    assert response.status_code == 409 and response.json()["error"]["code"] == "checkpoint_mismatch"
    assert b"fake" not in response.content and "retry-after" in response.headers


async def test_a_checkpoint_deleted_from_the_store_is_a_410(api: Api, s3_bucket: Bucket) -> None:
    user, job_id, key = await job_with_checkpoint(api, s3_bucket, b"weights")
    s3_bucket.client().delete_object(Bucket=s3_bucket.name, Key=f"{s3_bucket.prefix}/{key}")
    response = await api.client.get(f"/v1/jobs/{job_id}/checkpoint", headers=user)
    assert response.status_code == 410 and response.json()["error"]["code"] == "checkpoint_missing"


async def test_requests_that_need_the_store_answer_503_while_it_is_down(api: Api, s3_bucket: Bucket) -> None:
    user, job_id, _ = await job_with_checkpoint(api, s3_bucket, b"weights")
    s3_bucket.server.stop()
    try:
        answers = [
            await api.client.get(f"/v1/jobs/{job_id}/checkpoint", headers=user),
            await api.client.get(f"/v1/jobs/{job_id}/checkpoint/meta", headers=user),
            await api.client.post("/v1/datasets", files={"file": ("d.npz", npz())}, headers=user),
        ]
        for response in answers:
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "artifact_store_unavailable"
            assert response.headers["retry-after"] == "5"
        ready = await api.client.get("/readyz")
        assert ready.status_code == 503 and "artifacts unreachable" in ready.json()["error"]["message"]
        # What does not need the store still works, and the failed upload left nothing behind.
        assert (await api.client.get(f"/v1/jobs/{job_id}", headers=user)).status_code == 200
        assert (await api.client.get("/v1/datasets", headers=user)).json()["total"] == 0
        assert list(api.settings.upload_staging_dir.iterdir()) == []
    finally:
        s3_bucket.server.start()
    assert (await api.client.get(f"/v1/jobs/{job_id}/checkpoint", headers=user)).content == b"weights"
    assert (await api.client.get("/readyz")).status_code == 200
