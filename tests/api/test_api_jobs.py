"""POST/GET /v1/jobs and cancel: against a real database and a real broker queue."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from core.db.models import Job, JobStatus
from core.queue import queue_for
from tests.api.conftest import SPEC, Api, ApiFactory, spec
from trainer.spec import JobSpec

pytestmark = pytest.mark.anyio


def fields(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error"}, body
    return {f["field"]: f["reason"] for f in body["error"].get("fields", [])}


class TestSubmit:
    async def test_created_queued_and_sent_to_the_broker(self, api: Api) -> None:
        user = api.new_user()
        response = await api.client.post("/v1/jobs", json=SPEC, headers=user)

        assert response.status_code == 201
        job = response.json()
        assert response.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["status"] == "queued"
        assert job["queue"] == "cpu"
        assert job["spec"] == JobSpec.model_validate(SPEC).model_dump(mode="json")
        assert job["total_steps"] == 10 and job["progress"] == 0.0 and job["attempt"] == 0
        messages = api.drain_queue("cpu")
        assert [(m.headers["task"], m.payload[0]) for m in messages] == [("narrownet.run_job", [job["id"]])]

    async def test_a_plain_submission_stores_and_answers_what_the_jobs_service_does(self, api: Api) -> None:
        # On PostgreSQL a plain POST runs on the driver (api/services/job_writes.py); `Reuse: succeeded` with
        # nothing to reuse takes the jobs service's path. Both must leave the same row, answer and message.
        user = api.new_user()
        plain = await api.client.post("/v1/jobs", json=SPEC, headers=user)
        service = await api.client.post("/v1/jobs", json=SPEC, headers={**user, "Reuse": "succeeded"})
        assert plain.status_code == service.status_code == 201
        assert plain.headers["location"] == f"/v1/jobs/{plain.json()['id']}"
        own = {"id", "created_at", "updated_at"}
        assert {k: v for k, v in plain.json().items() if k not in own} == \
               {k: v for k, v in service.json().items() if k not in own}
        with api.session() as s:
            rows = [s.get_one(Job, r.json()["id"]) for r in (plain, service)]
            columns = [{c.key: getattr(row, c.key) for c in Job.__table__.columns if c.key not in own} for row in rows]
        assert columns[0] == columns[1]
        assert columns[0]["spec_hash"] is not None and columns[0]["request_hash"] is not None
        assert rows[0].created_at == rows[0].updated_at
        sent = [m.payload[0] for m in api.drain_queue("cpu")]
        assert sorted(sent) == sorted([[plain.json()["id"]], [service.json()["id"]]])

    async def test_cuda_jobs_go_to_the_gpu_queue(self, api: Api) -> None:
        response = await api.client.post("/v1/jobs", json=spec(device="cuda"), headers=api.new_user())
        assert response.status_code == 201 and response.json()["queue"] == "gpu"
        assert [m.payload[0] for m in api.drain_queue("gpu")] == [[response.json()["id"]]]
        assert api.drain_queue("cpu") == []

    def test_queue_for(self) -> None:
        resnet = spec(model={"arch": "resnet18", "block4_width": 8}, data={"source": "cifar10"},
                      loss="cross_entropy", optim={"name": "sgd", "lr": 0.1, "iterations": 10, "batch_size": 8})
        assert queue_for(JobSpec.model_validate(SPEC)) == "cpu"
        assert queue_for(JobSpec.model_validate(spec(device="cuda"))) == "gpu"
        assert queue_for(JobSpec.model_validate(resnet)) == "gpu"
        assert queue_for(JobSpec.model_validate({**resnet, "device": "cpu"})) == "cpu"

    async def test_idempotent_resubmission_is_one_job_and_one_message(self, api: Api) -> None:
        user = api.new_user()
        headers = {**user, "Idempotency-Key": "run-1"}
        first = await api.client.post("/v1/jobs", json=SPEC, headers=headers)
        # The same spec spelled differently (a default written out) is the same request.
        second = await api.client.post("/v1/jobs", json=spec(seed=0), headers=headers)

        assert first.status_code == 201
        assert second.status_code == 200 and second.headers["idempotent-replayed"] == "true"
        assert second.json()["id"] == first.json()["id"]
        with api.session() as s:
            rows = s.scalar(select(func.count()).select_from(Job).where(Job.owner_id == api.owner_id(user)))
        assert rows == 1
        assert len(api.drain_queue("cpu")) == 1

    async def test_concurrent_submissions_with_one_key_make_one_job(self, api: Api) -> None:
        import anyio

        user = api.new_user()
        responses = []

        async def submit() -> None:
            responses.append(await api.client.post("/v1/jobs", json=SPEC,
                                                   headers={**user, "Idempotency-Key": "burst"}))

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(submit)
        assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
        assert len({r.json()["id"] for r in responses}) == 1
        assert (await api.client.get("/v1/jobs", headers=user)).json()["total"] == 1
        assert len(api.drain_queue("cpu")) == 1

    async def test_same_key_different_spec_is_a_conflict(self, api: Api) -> None:
        headers = {**api.new_user(), "Idempotency-Key": "run-1"}
        first = await api.client.post("/v1/jobs", json=SPEC, headers=headers)
        other = await api.client.post("/v1/jobs", json=spec(seed=7), headers=headers)
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "idempotency_conflict"
        assert first.json()["id"] in other.json()["error"]["message"]

    async def test_idempotency_keys_belong_to_one_user(self, api: Api) -> None:
        a = await api.client.post("/v1/jobs", json=SPEC, headers={**api.new_user(), "Idempotency-Key": "k"})
        b = await api.client.post("/v1/jobs", json=SPEC, headers={**api.new_user(), "Idempotency-Key": "k"})
        assert a.status_code == b.status_code == 201
        assert a.json()["id"] != b.json()["id"]

    async def test_broker_down_still_records_the_job(self, api_factory: ApiFactory) -> None:
        # The row is the source of truth: a committed job stays queued (for the reconciler to send) and the
        # failure is counted, instead of the client retrying into a duplicate.
        async with api_factory(broker_url="redis://127.0.0.1:1/0") as api:
            user = api.new_user()
            response = await api.client.post("/v1/jobs", json=SPEC, headers=user)
            assert response.status_code == 201
            job = (await api.client.get(f"/v1/jobs/{response.json()['id']}", headers=user)).json()
            assert job["status"] == "queued"
            metrics = (await api.client.get("/metrics", headers=user)).text
            assert 'narrownet_enqueue_failures_total{queue="cpu"} 1.0' in metrics

    async def test_cap_on_queued_jobs(self, api_factory: ApiFactory) -> None:
        async with api_factory(max_queued_jobs_per_user=2) as api:
            user = api.new_user()
            codes = [(await api.client.post("/v1/jobs", json=SPEC, headers=user)).status_code for _ in range(3)]
            assert codes == [201, 201, 429]
            over = await api.client.post("/v1/jobs", json=SPEC, headers=user)
            assert over.json()["error"]["code"] == "too_many_queued_jobs"
            assert int(over.headers["retry-after"]) >= 1
            # A started job no longer counts against the cap.
            first = (await api.client.get("/v1/jobs", headers=user)).json()["items"][-1]
            api.update_job(first["id"], status=JobStatus.RUNNING)
            assert (await api.client.post("/v1/jobs", json=SPEC, headers=user)).status_code == 201


class TestBadSpecs:
    async def test_odd_width_in_constrained_regime_names_model_width(self, api: Api) -> None:
        response = await api.client.post("/v1/jobs", json=spec(model={"arch": "shallow", "width": 5}),
                                         headers=api.new_user())
        assert response.status_code == 422
        assert "even" in fields(response)["model.width"]

    async def test_nan_learning_rate_names_optim_lr(self, api: Api) -> None:
        raw = json.dumps(SPEC).replace('"lr": 0.1', '"lr": NaN')
        assert "NaN" in raw
        response = await api.client.post("/v1/jobs", content=raw, headers={
            **api.new_user(), "Content-Type": "application/json"})
        assert response.status_code == 422
        assert "finite" in fields(response)["optim.lr"]

    async def test_unknown_field_is_named(self, api: Api) -> None:
        response = await api.client.post("/v1/jobs", json=spec(model={"arch": "shallow", "width": 4, "depth": 2}),
                                         headers=api.new_user())
        assert response.status_code == 422
        assert list(fields(response)) == ["model.depth"]

    async def test_a_typo_suggests_the_field_and_lists_those_allowed(self, api: Api) -> None:
        optim = {"name": "gd", "lr_hiden": 0.1, "lr_outer": 0.1, "iterations": 10}
        response = await api.client.post("/v1/jobs", json=spec(optim=optim), headers=api.new_user())
        assert response.status_code == 422
        reason = fields(response)["optim.lr_hiden"]
        assert "did you mean 'lr_hidden'?" in reason and "lr_outer" in reason and "Extra inputs" not in reason
        # In a tagged union (the model archs) the names of the arch in question are known too.
        response = await api.client.post("/v1/jobs", json=spec(model={"arch": "shallow", "widht": 4}),
                                         headers=api.new_user())
        assert "did you mean 'width'?" in fields(response)["model.widht"]

    async def test_a_body_that_is_not_declared_json_says_to_declare_it(self, api: Api) -> None:
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            response = await api.client.post("/v1/jobs", content=json.dumps(SPEC).encode(),
                                             headers={**api.new_user(), "Content-Type": content_type})
            assert response.status_code == 415, response.text
            assert "Content-Type: application/json" in fields(response)["body"]
            assert "valid dictionary" not in response.text

    async def test_malformed_json(self, api: Api) -> None:
        response = await api.client.post("/v1/jobs", content=b'{"name": "x",', headers={
            **api.new_user(), "Content-Type": "application/json"})
        assert response.status_code == 422
        assert "malformed JSON" in fields(response)["body"]

    async def test_missing_field_and_wrong_type(self, api: Api) -> None:
        body = {k: v for k, v in SPEC.items() if k != "regime"}
        body["optim"] = {**SPEC["optim"], "iterations": "many"}
        response = await api.client.post("/v1/jobs", json=body, headers=api.new_user())
        assert response.status_code == 422
        assert set(fields(response)) == {"regime", "optim.iterations"}

    async def test_local_npz_paths_are_refused(self, api: Api) -> None:
        response = await api.client.post("/v1/jobs", json=spec(data={"source": "npz", "path": "/etc/passwd"}),
                                         headers=api.new_user())
        assert response.status_code == 422
        assert "POST /v1/datasets" in fields(response)["data.source"]

    async def test_unknown_dataset_names_data_id(self, api: Api) -> None:
        response = await api.client.post("/v1/jobs", json=spec(data={"source": "dataset", "id": "nope"}),
                                         headers=api.new_user())
        assert response.status_code == 422
        assert "nope" in fields(response)["data.id"]

    async def test_bad_idempotency_key_header(self, api: Api) -> None:
        response = await api.client.post("/v1/jobs", json=SPEC,
                                         headers={**api.new_user(), "Idempotency-Key": "x" * 129})
        assert response.status_code == 422
        assert "header.Idempotency-Key" in fields(response)

    async def test_nothing_was_recorded_or_sent(self, api: Api) -> None:
        user = api.new_user()
        await api.client.post("/v1/jobs", json=spec(model={"arch": "shallow", "width": 5}), headers=user)
        assert (await api.client.get("/v1/jobs", headers=user)).json()["total"] == 0
        assert api.drain_queue("cpu") == []


class TestRead:
    async def test_get_job_fields(self, api: Api) -> None:
        user = api.new_user()
        job_id = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
        api.update_job(job_id, status=JobStatus.RUNNING, step=5, attempt=1,
                       latest_metrics={"train_loss": 0.25})
        job = (await api.client.get(f"/v1/jobs/{job_id}", headers=user)).json()

        assert job["status"] == "running" and job["step"] == 5 and job["total_steps"] == 10
        assert job["progress"] == 0.5 and job["attempt"] == 1
        assert job["latest_metrics"] == {"train_loss": 0.25}
        assert job["eta_seconds"] is None  # no start time recorded, so no rate to extrapolate
        for stamp in ("created_at", "updated_at"):
            assert job[stamp].endswith(("Z", "+00:00"))
        assert job["started_at"] is None and job["finished_at"] is None and job["error"] is None

    async def test_eta_and_success(self, api: Api) -> None:
        from datetime import timedelta

        from core.db.models import utcnow

        user = api.new_user()
        job_id = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
        api.update_job(job_id, status=JobStatus.RUNNING, step=2, started_at=utcnow() - timedelta(seconds=100))
        eta = (await api.client.get(f"/v1/jobs/{job_id}", headers=user)).json()["eta_seconds"]
        assert 400 <= eta < 520  # 8 steps left at >= 50 s/step (the request itself adds a little)
        api.update_job(job_id, status=JobStatus.SUCCEEDED, step=10, final_metrics={"train_loss": 0.01})
        done = (await api.client.get(f"/v1/jobs/{job_id}", headers=user)).json()
        assert done["progress"] == 1.0 and done["eta_seconds"] is None
        assert done["final_metrics"] == {"train_loss": 0.01}

    async def test_unknown_id_is_404(self, api: Api) -> None:
        user = api.new_user()
        for job_id in ("0" * 32, "..", "x" * 500, "%00"):
            response = await api.client.get(f"/v1/jobs/{job_id}", headers=user)
            assert response.status_code == 404, job_id
            assert response.json()["error"]["code"] == "not_found"

    async def test_list_filters_and_pagination(self, api: Api) -> None:
        user = api.new_user()
        ids = []
        for i in range(5):
            body = spec(name=f"run-{i % 2}", regime="regular" if i < 2 else "constrained")
            ids.append((await api.client.post("/v1/jobs", json=body, headers=user)).json()["id"])
        api.update_job(ids[0], status=JobStatus.FAILED, error="boom")
        api.new_user()  # another user's jobs never show up

        async def page(**params: object) -> dict:
            response = await api.client.get("/v1/jobs", params=params, headers=user)
            assert response.status_code == 200, response.text
            return response.json()

        everything = await page()
        assert everything["total"] == 5
        assert {j["id"] for j in everything["items"]} == set(ids)
        assert [j["id"] for j in (await page(regime="regular"))["items"]] == [ids[1], ids[0]]
        assert [j["id"] for j in (await page(status="failed"))["items"]] == [ids[0]]
        assert (await page(status="queued", name="run-0"))["total"] == 2  # ids 2 and 4
        first, second = await page(limit=2, offset=0), await page(limit=2, offset=2)
        last = await page(limit=2, offset=4)
        assert first["total"] == second["total"] == last["total"] == 5
        seen = [j["id"] for p in (first, second, last) for j in p["items"]]
        assert sorted(seen) == sorted(ids) and len(last["items"]) == 1
        assert seen == [j["id"] for j in everything["items"]]  # pages are slices of one order
        past_the_end = await page(limit=2, offset=10)
        assert past_the_end["items"] == [] and past_the_end["total"] == 5  # the total, though no row carries it
        assert (await page(status="succeeded"))["total"] == 0

    async def test_short_id_prefixes_find_jobs(self, api: Api) -> None:
        user, other = api.new_user(), api.new_user("other")
        job = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()
        await api.client.post("/v1/jobs", json=SPEC, headers=other)
        found = (await api.client.get("/v1/jobs", params={"id_prefix": job["id"][:6]}, headers=user)).json()
        assert [j["id"] for j in found["items"]] == [job["id"]]
        theirs = (await api.client.get("/v1/jobs", params={"id_prefix": job["id"][:6]}, headers=other)).json()
        assert job["id"] not in [j["id"] for j in theirs["items"]]
        bad = await api.client.get("/v1/jobs", params={"id_prefix": "x%"}, headers=user)
        assert bad.status_code == 422 and "id_prefix" in str(bad.json())

    async def test_bad_list_parameters(self, api: Api) -> None:
        user = api.new_user()
        for params, field in (({"status": "done"}, "query.status"), ({"limit": 0}, "query.limit"),
                              ({"regime": "wide"}, "query.regime"), ({"name": "../x"}, "query.name")):
            response = await api.client.get("/v1/jobs", params=params, headers=user)
            assert response.status_code == 422 and field in fields(response), params


class TestCancel:
    async def test_queued_job_is_cancelled_at_once_and_cancel_is_idempotent(self, api: Api) -> None:
        user = api.new_user()
        job_id = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
        first = await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=user)
        again = await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=user)
        assert first.status_code == again.status_code == 200
        assert first.json()["status"] == again.json()["status"] == "cancelled"
        assert first.json()["finished_at"] is not None
        assert again.json()["finished_at"] == first.json()["finished_at"]

    async def test_running_job_gets_a_cancel_request_and_keeps_running(self, api: Api) -> None:
        user = api.new_user()
        job_id = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
        api.update_job(job_id, status=JobStatus.RUNNING, attempt=1)
        job = (await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=user)).json()
        assert job["status"] == "running" and job["cancel_requested"] is True
        with api.session() as s:
            row = s.get(Job, job_id)
            assert row is not None and row.cancel_requested and row.status == JobStatus.RUNNING

    async def test_finished_job_is_left_alone(self, api: Api) -> None:
        user = api.new_user()
        job_id = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
        api.update_job(job_id, status=JobStatus.SUCCEEDED, step=10)
        job = (await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=user)).json()
        assert job["status"] == "succeeded" and job["cancel_requested"] is False
