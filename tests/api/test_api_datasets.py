"""POST/GET /v1/datasets: streamed, capped, validated uploads of untrusted .npz files."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from tests.api.conftest import SPEC, Api, ApiFactory

pytestmark = pytest.mark.anyio


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def regression(n: int = 12, d: int = 3, n_test: int = 0) -> bytes:
    rng = np.random.default_rng(0)
    arrays = {"X": rng.normal(size=(n, d)).astype(np.float32), "y": rng.normal(size=n).astype(np.float32)}
    if n_test:
        arrays |= {"X_test": rng.normal(size=(n_test, d)).astype(np.float32),
                   "y_test": rng.normal(size=n_test).astype(np.float32)}
    return npz(**arrays)


def staged_files(api: Api) -> list[Path]:
    staging = api.settings.resolved_artifact_dir / "tmp"
    return list(staging.iterdir()) if staging.exists() else []


class TestUpload:
    async def test_good_upload_is_stored_described_and_usable(self, api: Api) -> None:
        user = api.new_user()
        data = regression(n=12, d=3, n_test=4)
        response = await api.client.post("/v1/datasets", files={"file": ("my data.npz", data)},
                                         data={"name": "toy-1"}, headers=user)
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert response.headers["location"] == f"/v1/datasets/{dataset['id']}"
        assert dataset["name"] == "toy-1" and dataset["task"] == "regression"
        assert dataset["sha256"] == hashlib.sha256(data).hexdigest() and dataset["size_bytes"] == len(data)
        assert (dataset["n_train"], dataset["n_test"]) == (12, 4)
        assert dataset["input_shape"] == {"train": [12, 3], "test": [4, 3]}
        stored = api.settings.resolved_artifact_dir / "datasets" / f"{dataset['id']}.npz"
        assert stored.read_bytes() == data
        assert staged_files(api) == []

        assert (await api.client.get(f"/v1/datasets/{dataset['id']}", headers=user)).json() == dataset
        listing = (await api.client.get("/v1/datasets", headers=user)).json()
        assert listing["total"] == 1 and listing["items"] == [dataset]
        job = await api.client.post("/v1/jobs", headers=user,
                                    json={**SPEC, "data": {"source": "dataset", "id": dataset["id"]}})
        assert job.status_code == 201, job.text

    async def test_a_spec_names_a_dataset_and_the_job_keeps_its_id(self, api: Api) -> None:
        user = api.new_user()
        older = (await api.client.post("/v1/datasets", files={"file": ("a.npz", regression())},
                                       data={"name": "shared"}, headers=user)).json()
        newer = (await api.client.post("/v1/datasets", files={"file": ("b.npz", regression(n=20))},
                                       data={"name": "shared"}, headers=user)).json()
        named = {**SPEC, "data": {"source": "dataset", "name": "shared"}}
        job = await api.client.post("/v1/jobs", json=named, headers=user)
        assert job.status_code == 201, job.text
        assert job.json()["spec"]["data"]["id"] == newer["id"] != older["id"]
        # Another user's dataset of that name is not theirs to use.
        stranger = await api.client.post("/v1/jobs", json=named, headers=api.new_user("stranger"))
        assert stranger.status_code == 422
        assert "no dataset named 'shared'" in stranger.json()["error"]["fields"][0]["reason"]
        neither = await api.client.post("/v1/jobs", json={**SPEC, "data": {"source": "dataset"}}, headers=user)
        assert neither.status_code == 422 and "data.id" in neither.text

    async def test_classification_and_default_name(self, api: Api) -> None:
        data = npz(X=np.ones((10, 1, 2, 2), dtype=np.uint8), y=np.arange(10, dtype=np.int64) % 3)
        response = await api.client.post("/v1/datasets", files={"file": ("../../etc/pa ss.npz", data)},
                                         headers=api.new_user())
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert dataset["task"] == "classification" and dataset["num_classes"] == 3
        assert dataset["input_shape"] == {"train": [10, 1, 2, 2], "test": None}
        assert dataset["name"] == "pa_ss"  # the file name is only a label, never a path

    async def test_object_array_is_refused_naming_the_key(self, api: Api) -> None:
        data = npz(X=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4, dtype=np.float32))
        response = await api.client.post("/v1/datasets", files={"file": ("evil.npz", data)},
                                         headers=api.new_user())
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["fields"][0]["field"] == "X", error
        assert staged_files(api) == []
        assert not (api.settings.resolved_artifact_dir / "datasets").exists()

    async def test_not_an_npz(self, api: Api) -> None:
        response = await api.client.post("/v1/datasets", files={"file": ("x.npz", b"not a zip at all")},
                                         headers=api.new_user())
        assert response.status_code == 422
        assert response.json()["error"]["fields"][0]["field"] == "file"

    async def test_oversize_file_is_413_while_streaming(self, api_factory: ApiFactory) -> None:
        async with api_factory(max_upload_bytes=4096) as api:
            user = api.new_user()
            data = regression(n=400, d=8)  # ~13 KB: under the request cap with framing, over the file cap
            assert 4096 < len(data) < 4096 + 64 * 1024
            response = await api.client.post("/v1/datasets", files={"file": ("big.npz", data)}, headers=user)
            assert response.status_code == 413, response.text
            assert response.json()["error"]["code"] == "payload_too_large"
            assert staged_files(api) == []
            assert (await api.client.get("/v1/datasets", headers=user)).json()["total"] == 0

    async def test_oversize_declared_length_is_413_before_reading(self, api_factory: ApiFactory) -> None:
        async with api_factory(max_upload_bytes=4096) as api:
            data = regression(n=4000, d=8)  # ~130 KB
            response = await api.client.post("/v1/datasets", files={"file": ("big.npz", data)},
                                             headers=api.new_user())
            assert response.status_code == 413
            assert "exceeds the limit" in response.json()["error"]["message"]

    async def test_form_problems(self, api: Api) -> None:
        user = api.new_user()
        not_multipart = await api.client.post("/v1/datasets", content=regression(),
                                              headers={**user, "Content-Type": "application/octet-stream"})
        assert not_multipart.status_code == 415
        no_file = await api.client.post("/v1/datasets", data={"name": "x"},
                                        files={"other": ("a.npz", regression())}, headers=user)
        assert no_file.status_code == 422
        assert no_file.json()["error"]["fields"][0]["field"] == "other"
        for name in ("../x", "x\n"):
            bad_name = await api.client.post("/v1/datasets", data={"name": name},
                                             files={"file": ("a.npz", regression())}, headers=user)
            assert bad_name.status_code == 422, name
            assert bad_name.json()["error"]["fields"][0]["field"] == "name"
        two_files = await api.client.post("/v1/datasets", headers=user, files=[
            ("file", ("a.npz", regression())), ("file", ("b.npz", regression()))])
        assert two_files.status_code == 422
        assert staged_files(api) == []

    async def test_unknown_dataset_is_404(self, api: Api) -> None:
        response = await api.client.get("/v1/datasets/" + "f" * 32, headers=api.new_user())
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
