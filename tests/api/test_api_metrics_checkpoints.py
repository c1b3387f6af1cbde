"""GET /v1/jobs/{id}/metrics on rows written through the models; checkpoint download and metadata on files
written in the trainer's own checkpoint format."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from core.db.models import Checkpoint, MetricPoint
from tests.api.conftest import SPEC, Api

pytestmark = pytest.mark.anyio


async def new_job(api: Api) -> tuple[dict[str, str], str]:
    user = api.new_user()
    response = await api.client.post("/v1/jobs", json=SPEC, headers=user)
    assert response.status_code == 201
    return user, response.json()["id"]


class TestMetricSeries:
    async def test_since_step_every_and_limit(self, api: Api) -> None:
        user, job_id = await new_job(api)
        steps = list(range(0, 100, 10))  # 0, 10, ..., 90, inserted out of order
        with api.session() as s:
            for step in reversed(steps):
                s.add(MetricPoint(job_id=job_id, step=step, values={"train_loss": 1.0 / (step + 1)}, attempt=1))

        async def series(**params: int) -> dict:
            response = await api.client.get(f"/v1/jobs/{job_id}/metrics", params=params, headers=user)
            assert response.status_code == 200, response.text
            return response.json()

        full = await series()
        assert [p["step"] for p in full["points"]] == steps
        assert full["points"][3]["values"] == {"train_loss": 1.0 / 31}
        assert full["next_since_step"] == 90
        assert [p["step"] for p in (await series(since_step=40))["points"]] == [50, 60, 70, 80, 90]
        assert [p["step"] for p in (await series(every=3))["points"]] == [0, 30, 60, 90]
        # Downsampling counts from the start of the series, so polling keeps the same points.
        assert [p["step"] for p in (await series(every=3, since_step=30))["points"]] == [60, 90]
        page = await series(limit=4)
        assert [p["step"] for p in page["points"]] == [0, 10, 20, 30] and page["next_since_step"] == 30
        empty = await series(since_step=90)
        assert empty["points"] == [] and empty["next_since_step"] is None

    async def test_bad_parameters(self, api: Api) -> None:
        user, job_id = await new_job(api)
        for params in ({"every": 0}, {"since_step": "x"}, {"limit": 100_000}):
            response = await api.client.get(f"/v1/jobs/{job_id}/metrics", params=params, headers=user)
            assert response.status_code == 422, params


def write_checkpoint(api: Api, job_id: str, step: int, *, final: bool = False) -> tuple[Path, dict]:
    """A checkpoint written by the trainer's own writer, recorded the way the worker records it."""
    import torch

    from trainer.checkpoint import save_checkpoint

    run_dir = api.settings.resolved_artifact_dir / "jobs" / job_id
    generator = torch.Generator().manual_seed(step)
    tensors = {"W": torch.randn(4, 3, generator=generator), "W0": torch.zeros(4, 3),
               "v": torch.randn(2, 1, generator=generator), "x_mean": torch.zeros(3), "x_std": torch.ones(3)}
    weights, meta = save_checkpoint(run_dir, step, tensors, {"spec": SPEC, "final_train_loss": 0.125})
    with api.session() as s:
        s.add(Checkpoint(job_id=job_id, step=step, attempt=1, sha256=meta["sha256"],
                         size_bytes=weights.stat().st_size, final=final,
                         relpath=weights.relative_to(api.settings.resolved_artifact_dir).as_posix()))
    return weights, meta


class TestCheckpoint:
    async def test_download_latest_with_verified_sha256(self, api: Api) -> None:
        from safetensors.torch import load

        user, job_id = await new_job(api)
        write_checkpoint(api, job_id, 5)
        weights, meta = write_checkpoint(api, job_id, 10, final=True)

        response = await api.client.get(f"/v1/jobs/{job_id}/checkpoint", headers=user)
        assert response.status_code == 200, response.text
        assert response.content == weights.read_bytes()
        assert response.headers["x-checkpoint-sha256"] == hashlib.sha256(response.content).hexdigest()
        assert response.headers["x-checkpoint-sha256"] == meta["sha256"]
        assert response.headers["etag"] == f'"{meta["sha256"]}"'
        assert response.headers["x-checkpoint-step"] == "10"
        assert int(response.headers["content-length"]) == len(response.content)
        assert set(load(response.content)) == {"W", "W0", "v", "x_mean", "x_std"}

        again = await api.client.get(f"/v1/jobs/{job_id}/checkpoint",
                                     headers={**user, "If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and again.content == b""

    async def test_metadata(self, api: Api) -> None:
        user, job_id = await new_job(api)
        _, meta = write_checkpoint(api, job_id, 7)
        response = await api.client.get(f"/v1/jobs/{job_id}/checkpoint/meta", headers=user)
        assert response.status_code == 200
        body = response.json()
        assert body["sha256"] == meta["sha256"] and body["step"] == 7
        assert body["spec"] == SPEC and body["final_train_loss"] == 0.125

    async def test_tampered_file_is_refused_not_served(self, api: Api) -> None:
        user, job_id = await new_job(api)
        weights, _ = write_checkpoint(api, job_id, 3)
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        response = await api.client.get(f"/v1/jobs/{job_id}/checkpoint", headers=user)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "checkpoint_mismatch"
        assert "sha256" in response.json()["error"]["message"]

    async def test_missing_file_is_410(self, api: Api) -> None:
        user, job_id = await new_job(api)
        weights, _ = write_checkpoint(api, job_id, 3)
        weights.unlink()
        weights.with_suffix(".json").unlink()
        for path in ("checkpoint", "checkpoint/meta"):
            response = await api.client.get(f"/v1/jobs/{job_id}/{path}", headers=user)
            assert response.status_code == 410, path
            assert response.json()["error"]["code"] == "checkpoint_missing"

    async def test_no_checkpoint_yet_is_404(self, api: Api) -> None:
        user, job_id = await new_job(api)
        response = await api.client.get(f"/v1/jobs/{job_id}/checkpoint", headers=user)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "checkpoint_not_found"

    async def test_download_streams_the_verified_bytes(self, api: Api) -> None:
        # Large enough to span several read chunks.
        user, job_id = await new_job(api)
        run_dir = api.settings.resolved_artifact_dir / "jobs" / job_id
        run_dir.mkdir(parents=True)
        blob = io.BytesIO()
        for i in range(3 * 1024):
            blob.write(hashlib.sha256(str(i).encode()).digest() * 32)
        path = run_dir / "ckpt-000000001.safetensors"
        path.write_bytes(blob.getvalue())
        sha = hashlib.sha256(blob.getvalue()).hexdigest()
        with api.session() as s:
            s.add(Checkpoint(job_id=job_id, step=1, attempt=1, sha256=sha, size_bytes=len(blob.getvalue()),
                             relpath=f"jobs/{job_id}/{path.name}"))
        response = await api.client.get(f"/v1/jobs/{job_id}/checkpoint", headers=user)
        assert response.status_code == 200
        assert len(response.content) == 3 * 1024 * 1024
        assert hashlib.sha256(response.content).hexdigest() == sha
