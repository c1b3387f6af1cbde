"""Promise 8 on the S3 backend: object keys are made from server-made ids only. Upload file names and names
never reach a key, and a checkpoint row whose relpath tries to leave the store's prefix (../, an absolute key,
backslashes, NUL) is a 410 that reads nothing, while objects planted outside the prefix are never served."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from core.db.models import Checkpoint
from tests.api.conftest import Api, ApiFactory
from tests.s3 import Bucket, s3_bucket, s3_server
from tests.security.conftest import make_user, npz_bytes
from tests.security.test_path_traversal import TRICKS

pytestmark = pytest.mark.anyio
__all__ = ["s3_bucket", "s3_server"]  # fixtures

SECRET = b"do not serve me"
ESCAPES = ["../secret.txt", "../../secret.txt", "/secret.txt", "jobs/../../secret.txt", "..\\secret.txt",
           "secret.txt\x00.safetensors", "//secret.txt", "narrownet/../secret.txt", "%2e%2e/secret.txt"]


@pytest.fixture
async def api(api_factory: ApiFactory, s3_bucket: Bucket, tmp_path: Path) -> AsyncIterator[Api]:
    client = s3_bucket.client()
    for key in ("secret.txt", "other/secret.txt", "narrownet/../secret.txt"):  # outside the store's prefix
        client.put_object(Bucket=s3_bucket.name, Key=key, Body=SECRET)
    async with api_factory(artifact_url=s3_bucket.url, work_dir=tmp_path / "api-work") as made:
        yield made


def ours(bucket: Bucket) -> list[str]:
    return [k for k in bucket.object_keys() if k not in {"secret.txt", "other/secret.txt", "narrownet/../secret.txt"}]


async def test_upload_names_never_reach_a_key(api: Api, s3_bucket: Bucket) -> None:
    user = api.new_user()
    data = npz_bytes(X=np.ones((6, 3), dtype=np.float32), y=np.zeros(6, dtype=np.float32))
    for trick in TRICKS:
        response = await api.client.post("/v1/datasets", files={"file": (trick.replace("\x00", ""), data)},
                                         headers=user)
        assert response.status_code in (201, 422), (trick, response.text)
    keys = ours(s3_bucket)
    assert keys and all(re.fullmatch(r"narrownet/datasets/[0-9a-f]{32}\.npz", k) for k in keys), keys


async def test_a_checkpoint_row_pointing_outside_the_prefix_is_a_410_and_reads_nothing(api: Api,
                                                                                      s3_bucket: Bucket) -> None:
    alice = await make_user(api, "alice")  # her real checkpoint is a local file: not in this store
    for relpath in ESCAPES:
        if "\x00" in relpath and api.runtime.engine.dialect.name == "postgresql":
            continue  # PostgreSQL cannot even store it
        with api.session() as s:
            s.add(Checkpoint(job_id=alice.job_id, step=100, attempt=1, sha256="0" * 64, size_bytes=15,
                             relpath=relpath))
        for suffix in ("/checkpoint", "/checkpoint/meta"):
            response = await api.client.get(f"/v1/jobs/{alice.job_id}{suffix}", headers=alice.headers)
            assert response.status_code == 410, (relpath, suffix, response.text)
            assert SECRET not in response.content
        with api.session() as s:
            s.query(Checkpoint).filter(Checkpoint.step == 100).delete()
