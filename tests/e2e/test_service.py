"""The service end to end, over HTTP, against a real uvicorn server and a real Celery worker process.

Runs once per backend (embedded SQLite + SQLite broker, and PostgreSQL + Redis): see conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import load_file

from narrownet.client import ApiError, NarrownetClient, NoApiKey
from tests.e2e.conftest import Stack, shallow_spec

pytestmark = pytest.mark.service

JOB_DEADLINE = 120.0
ACTIVATIONS = {"tanh": np.tanh, "relu": lambda h: np.maximum(h, 0.0)}


def regression_npz(path: Path, n: int = 48, n_test: int = 16, d: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    arrays = {"X": rng.normal(size=(n, d)).astype(np.float32) * 3 + 1,
              "y": rng.normal(size=n).astype(np.float32),
              "X_test": rng.normal(size=(n_test, d)).astype(np.float32),
              "y_test": rng.normal(size=n_test).astype(np.float32)}
    np.savez(path, **arrays)
    return arrays


def wait_for_status(client: NarrownetClient, job_id: str, statuses: set[str], *, also=lambda job: True,
                    timeout: float = JOB_DEADLINE) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.job(job_id)
        if job["status"] in statuses and also(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout}s: {job}"
        time.sleep(0.2)


def loss_from_checkpoint(path: Path, X: np.ndarray, y: np.ndarray, regime: str, activation: str) -> float:
    """The square loss 0.5 * mean_i ||f(x_i) - y_i||^2 with f = act(X_s W^T) u, from the weights alone."""
    t = {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}
    X_s = (X.astype(np.float64) - t["x_mean"]) / t["x_std"]
    u = np.concatenate([t["v"], -t["v"]]) if regime == "constrained" else t["v"]
    f = ACTIVATIONS[activation](X_s @ t["W"].T) @ u
    return float(0.5 * np.mean(np.sum((f - y.reshape(len(y), -1)) ** 2, axis=1)))


class TestTraining:
    def test_regular_and_constrained_jobs_on_an_uploaded_dataset_reproduce_their_reported_loss(
            self, stack: Stack, alice: NarrownetClient, tmp_path: Path):
        arrays = regression_npz(tmp_path / "reg.npz")
        dataset = alice.upload_dataset(tmp_path / "reg.npz", name="reg")
        assert (dataset["n_train"], dataset["n_test"], dataset["task"]) == (48, 16, "regression")
        assert dataset["sha256"] == hashlib.sha256((tmp_path / "reg.npz").read_bytes()).hexdigest()
        data = {"source": "dataset", "id": dataset["id"]}
        submitted = {regime: alice.submit(shallow_spec(f"e2e-{regime}", regime, data))
                     for regime in ("regular", "constrained")}
        assert {job["status"] for job in submitted.values()} == {"queued"}

        for regime, job in submitted.items():
            done = alice.wait(job["id"], timeout=JOB_DEADLINE, poll_interval=0.2)
            assert done["status"] == "succeeded", done
            assert (done["step"], done["total_steps"], done["progress"], done["attempt"]) == (300, 300, 1.0, 1)
            reported = done["final_metrics"]["train_loss"]

            series = alice.metrics(job["id"])
            assert [p["step"] for p in series["points"]] == list(range(0, 301, 50))
            assert series["points"][-1]["values"]["train_loss"] == pytest.approx(reported)
            assert series["points"][-1]["values"]["train_loss"] < series["points"][0]["values"]["train_loss"]
            assert [p["step"] for p in alice.metrics(job["id"], since_step=200)["points"]] == [250, 300]

            target = tmp_path / f"{regime}.safetensors"
            digest = alice.fetch_checkpoint(job["id"], target)
            meta = alice.checkpoint_meta(job["id"])
            assert (meta["sha256"], meta["step"]) == (digest, 300)
            assert meta["final_train_loss"] == pytest.approx(reported)
            recomputed = loss_from_checkpoint(target, arrays["X"], arrays["y"], regime, "tanh")
            assert recomputed == pytest.approx(reported, rel=1e-4, abs=1e-7)

    def test_cli_submit_wait_status_metrics_fetch(self, stack: Stack, keys: dict[str, str], tmp_path: Path):
        spec = shallow_spec("e2e-cli", "constrained", {"source": "synthetic", "n": 32, "d": 4}, iterations=200)
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        key = ["--key", keys["alice"]]

        submitted = stack.cli("submit", str(tmp_path / "spec.json"), "--wait", "--json", *key)
        job = json.loads(submitted.stdout)
        assert job["status"] == "succeeded" and job["step"] == 200

        status = json.loads(stack.cli("status", job["id"], "--json", *key).stdout)
        assert status["id"] == job["id"] and status["final_metrics"] == job["final_metrics"]
        series = json.loads(stack.cli("metrics", job["id"], "--json", *key).stdout)
        assert [p["step"] for p in series["points"]] == [0, 50, 100, 150, 200]
        listed = json.loads(stack.cli("list", "--name", "e2e-cli", "--json", *key).stdout)
        assert [j["id"] for j in listed["items"]] == [job["id"]]
        stack.cli("fetch", job["id"], "-o", str(tmp_path / "model.safetensors"), *key)
        assert set(load_file(str(tmp_path / "model.safetensors"))) >= {"W", "W0", "v", "x_mean", "x_std"}

        regression_npz(tmp_path / "cli.npz")
        uploaded = json.loads(stack.cli("datasets", "upload", str(tmp_path / "cli.npz"), "--name", "cli-data",
                                        "--json", *key).stdout)
        datasets = json.loads(stack.cli("datasets", "list", "--json", *key).stdout)
        assert uploaded["name"] == "cli-data" and uploaded["id"] in {d["id"] for d in datasets["items"]}

        missing = stack.cli("status", "0" * 32, *key, check=False)
        assert missing.returncode == 1 and "404" in missing.stderr

    def test_cancel_stops_a_running_job_and_keeps_its_last_checkpoint(self, alice: NarrownetClient,
                                                                        tmp_path: Path):
        spec = shallow_spec("e2e-cancel", "constrained", {"source": "synthetic", "n": 32, "d": 4},
                            iterations=5_000_000, metrics_every=1000, checkpoint_every=None)
        job = alice.submit(spec)
        wait_for_status(alice, job["id"], {"running"}, also=lambda j: j["step"] > 0)

        cancelled = alice.cancel(job["id"])
        assert cancelled["cancel_requested"] is True
        done = wait_for_status(alice, job["id"], {"cancelled", "succeeded", "failed"})
        assert done["status"] == "cancelled" and 0 < done["step"] < 5_000_000
        assert alice.cancel(job["id"])["status"] == "cancelled"  # idempotent and final

        meta = alice.checkpoint_meta(job["id"])
        assert meta["step"] == done["step"]
        assert alice.fetch_checkpoint(job["id"], tmp_path / "last.safetensors") == meta["sha256"]


class TestRequests:
    def test_idempotent_resubmission_returns_the_same_job(self, alice: NarrownetClient):
        spec = shallow_spec("e2e-idem", "regular", {"source": "synthetic", "n": 16, "d": 4}, iterations=50)
        key = uuid.uuid4().hex
        first = alice.submit(spec, idempotency_key=key)
        again = alice.submit(spec, idempotency_key=key)
        assert again["id"] == first["id"]
        assert alice.jobs(name="e2e-idem")["total"] == 1
        with pytest.raises(ApiError) as conflict:
            alice.submit({**spec, "seed": 1}, idempotency_key=key)
        assert conflict.value.status_code in (409, 422)
        assert alice.wait(first["id"], timeout=JOB_DEADLINE, poll_interval=0.2)["attempt"] == 1

    def test_another_users_job_and_dataset_are_404(self, alice: NarrownetClient, bob: NarrownetClient,
                                                   tmp_path: Path):
        job = alice.submit(shallow_spec("e2e-private", "regular", {"source": "synthetic", "n": 16, "d": 4},
                                        iterations=50))
        regression_npz(tmp_path / "private.npz")
        dataset = alice.upload_dataset(tmp_path / "private.npz")
        alice.wait(job["id"], timeout=JOB_DEADLINE, poll_interval=0.2)

        for call in (lambda: bob.job(job["id"]), lambda: bob.metrics(job["id"]), lambda: bob.cancel(job["id"]),
                     lambda: bob.checkpoint_meta(job["id"]), lambda: bob.dataset(dataset["id"]),
                     lambda: bob.fetch_checkpoint(job["id"], tmp_path / "stolen.safetensors")):
            with pytest.raises(ApiError) as denied:
                call()
            assert denied.value.status_code == 404
        assert job["id"] not in {j["id"] for j in bob.jobs(limit=200)["items"]}
        assert not (tmp_path / "stolen.safetensors").exists()
        # Bob cannot train on Alice's dataset either.
        with pytest.raises(ApiError) as refused:
            bob.submit(shallow_spec("e2e-steal", "regular", {"source": "dataset", "id": dataset["id"]}))
        assert refused.value.status_code in (404, 422)

    def test_bad_spec_is_422_naming_the_field(self, alice: NarrownetClient):
        spec = shallow_spec("e2e-bad", "regular", {"source": "synthetic", "n": 16, "d": 4})
        for bad, field in ((({**spec, "model": {"arch": "shallow", "width": -3}}), "model.width"),
                           ({**spec, "optim": {**spec["optim"], "lr": -1}}, "optim.lr"),
                           ({**spec, "regime": "constrained", "model": {"arch": "shallow", "width": 7}},
                            "model.width"),
                           ({**spec, "colour": "red"}, "colour")):
            with pytest.raises(ApiError) as rejected:
                alice.submit(bad)
            assert rejected.value.status_code == 422
            assert field in {f["field"] for f in rejected.value.fields}, rejected.value.fields

    def test_missing_or_wrong_key_is_401_and_health_needs_none(self, stack: Stack):
        for path in ("/v1/jobs", "/v1/datasets", f"/v1/jobs/{'0' * 32}"):
            assert httpx.get(f"{stack.url}{path}").status_code == 401
        with stack.client(None) as client:  # the client turns a 401 without a key into "set a key"
            with pytest.raises(NoApiKey):
                client.jobs()
        with stack.client("nn_not-a-real-key") as client:
            for call in (lambda c=client: c.jobs(), lambda c=client: c.datasets(),
                         lambda c=client: c.job("0" * 32)):
                with pytest.raises(ApiError) as denied:
                    call()
                assert denied.value.status_code == 401
        assert httpx.get(f"{stack.url}/healthz").status_code == 200
        assert httpx.get(f"{stack.url}/readyz").status_code == 200
