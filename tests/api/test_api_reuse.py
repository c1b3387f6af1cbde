"""spec_hash on every job, GET /v1/jobs?spec_hash=, and POST /v1/jobs with 'Reuse: succeeded': the caller's own
succeeded job with the same hash comes back (200, Reused: true) instead of a new run; never a failed or cancelled
job, never another user's, never one whose result is gone."""

from __future__ import annotations

from typing import Any

import pytest

from core.db.models import JobStatus, utcnow
from tests.api.conftest import SPEC, Api, spec
from tests.api.test_api_metrics_checkpoints import write_checkpoint
from trainer.fingerprint import data_identity, spec_hash
from trainer.spec import JobSpec

pytestmark = pytest.mark.anyio
REUSE = {"Reuse": "succeeded"}


async def submit(api: Api, user: dict[str, str], body: dict[str, Any] = SPEC, *, reuse: bool = False,
                 status: int = 201) -> dict[str, Any]:
    response = await api.client.post("/v1/jobs", json=body, headers={**user, **(REUSE if reuse else {})})
    assert response.status_code == status, response.text
    if status == 200:
        assert response.headers["reused"] == "true"
        assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    else:
        assert "reused" not in response.headers
    return response.json()


def finish(api: Api, job_id: str, status: JobStatus = JobStatus.SUCCEEDED, *, checkpoint: bool = True) -> None:
    """Make the job look as the worker leaves it: an outcome and (on success) a final checkpoint."""
    if checkpoint:
        write_checkpoint(api, job_id, 10, final=True)
    api.update_job(job_id, status=status, finished_at=utcnow(), step=10)


class TestSpecHash:
    async def test_every_job_carries_the_hash_of_its_canonical_spec(self, api: Api) -> None:
        job = await submit(api, api.new_user())
        parsed = JobSpec.model_validate(SPEC)
        assert job["spec_hash"] == spec_hash(parsed, data_identity(parsed.data))
        # Spelled-out defaults and another name: the same result, the same hash.
        same = await submit(api, api.new_user(), spec(name="other", loss="square", seed=0))
        assert same["spec_hash"] == job["spec_hash"]
        assert (await submit(api, api.new_user(), spec(seed=1)))["spec_hash"] != job["spec_hash"]

    async def test_list_filters_by_spec_hash(self, api: Api) -> None:
        user = api.new_user()
        a1, a2 = await submit(api, user), await submit(api, user, spec(name="again"))
        await submit(api, user, spec(seed=7))
        response = await api.client.get("/v1/jobs", params={"spec_hash": a1["spec_hash"]}, headers=user)
        assert response.status_code == 200
        assert {j["id"] for j in response.json()["items"]} == {a1["id"], a2["id"]}
        for bad in ("abc", "G" * 64, a1["spec_hash"].upper()):
            assert (await api.client.get("/v1/jobs", params={"spec_hash": bad}, headers=user)).status_code == 422
        api.drain_queue("cpu")


class TestReuse:
    async def test_a_succeeded_job_is_returned_instead_of_training_again(self, api: Api) -> None:
        user = api.new_user()
        first = await submit(api, user)
        finish(api, first["id"])
        api.drain_queue("cpu")

        again = await submit(api, user, spec(name="renamed"), reuse=True, status=200)
        assert again["id"] == first["id"] and again["status"] == "succeeded"
        assert api.drain_queue("cpu") == []  # nothing was sent to train
        listed = await api.client.get("/v1/jobs", params={"spec_hash": first["spec_hash"]}, headers=user)
        assert listed.json()["total"] == 1
        # Without the header a submission trains, as before; the plan points at the reusable job.
        assert (await submit(api, user))["id"] != first["id"]
        planned = await api.client.post("/v1/plan", json=SPEC, headers=user)
        assert planned.json()["reusable_job_id"] == first["id"]
        api.drain_queue("cpu")

    @pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.RUNNING])
    async def test_never_a_job_that_did_not_succeed(self, api: Api, status: JobStatus) -> None:
        user = api.new_user()
        first = await submit(api, user)
        finish(api, first["id"], status)
        fresh = await submit(api, user, reuse=True)
        assert fresh["id"] != first["id"] and fresh["status"] == "queued"
        assert [m.payload[0] for m in api.drain_queue("cpu")] == [[first["id"]], [fresh["id"]]]

    async def test_never_another_users_job(self, api: Api) -> None:
        alice, bob = api.new_user("alice"), api.new_user("bob")
        first = await submit(api, alice)
        finish(api, first["id"])
        theirs = await submit(api, bob, reuse=True)
        assert theirs["id"] != first["id"] and theirs["spec_hash"] == first["spec_hash"]
        api.drain_queue("cpu")

    async def test_not_when_the_result_is_gone(self, api: Api) -> None:
        user = api.new_user()
        first = await submit(api, user)
        finish(api, first["id"])
        (api.settings.resolved_artifact_dir / "jobs" / first["id"] / "ckpt-000000010.safetensors").unlink()
        assert (await submit(api, user, reuse=True))["id"] != first["id"]
        second = await submit(api, user)
        finish(api, second["id"], checkpoint=False)  # succeeded, but no final checkpoint recorded
        assert (await submit(api, user, reuse=True))["id"] not in (first["id"], second["id"])
        api.drain_queue("cpu")

    async def test_the_newest_succeeded_job_is_returned(self, api: Api) -> None:
        user = api.new_user()
        older, newer = await submit(api, user), await submit(api, user)
        finish(api, newer["id"])
        finish(api, older["id"])  # finished last
        assert (await submit(api, user, reuse=True, status=200))["id"] == older["id"]
        api.drain_queue("cpu")

    async def test_a_bad_reuse_value_is_422_naming_the_header(self, api: Api) -> None:
        response = await api.client.post("/v1/jobs", json=SPEC, headers={**api.new_user(), "Reuse": "always"})
        assert response.status_code == 422
        assert "reuse" in response.json()["error"]["fields"][0]["field"].lower()

    async def test_an_idempotency_replay_comes_before_reuse(self, api: Api) -> None:
        user = api.new_user()
        done = await submit(api, user)
        finish(api, done["id"])
        keyed = await api.client.post("/v1/jobs", json=spec(seed=3), headers={**user, "Idempotency-Key": "k1"})
        replay = await api.client.post("/v1/jobs", json=spec(seed=3),
                                       headers={**user, "Idempotency-Key": "k1", **REUSE})
        assert replay.status_code == 200 and replay.json()["id"] == keyed.json()["id"]
        assert replay.headers["idempotent-replayed"] == "true" and "reused" not in replay.headers
        api.drain_queue("cpu")
