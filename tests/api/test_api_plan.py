"""POST /v1/plan and POST /v1/jobs?dry_run=true: the trainer's counts, the queue, the run-time estimate from the
workers' measured throughput, and warnings; the submit path's 422s; nothing written, nothing queued."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from api.services.plan import plan_specs
from api.services.reuse import reusable_jobs, spec_hash_of
from core.db.models import ApiKey, Job, ThroughputSample, utcnow
from core.repositories import throughput as throughput_repo
from tests.api.conftest import SPEC, Api, ApiFactory, spec
from tests.api.test_api_reuse import finish
from trainer.plan import data_shape, plan_job
from trainer.spec import JobSpec

pytestmark = pytest.mark.anyio

PAPER_LIKE = spec(name="narrow", model={"arch": "shallow", "width": 40},
                  data={"source": "synthetic", "n": 200, "d": 20},
                  optim={"name": "gd", "lr": 5.0, "momentum": 0.9, "iterations": 2000},
                  constraint={"radius": 3.0}, checkpoint_every=500)


def job_count(api: Api) -> int:
    with api.session() as s:
        return s.scalar(select(func.count()).select_from(Job)) or 0


async def plan(api: Api, user: dict[str, str], body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = await api.client.post("/v1/plan", json=body, headers=user)
    assert response.status_code == status, response.text
    return response.json()


class TestPlan:
    async def test_answers_the_trainers_counts_and_queues_nothing(self, api: Api) -> None:
        user = api.new_user()
        before = job_count(api)
        answer = await plan(api, user, PAPER_LIKE)
        expected = plan_job(JobSpec.model_validate(PAPER_LIKE), data_shape(JobSpec.model_validate(PAPER_LIKE).data),
                            device="cpu").model_dump(mode="json")
        for part in ("width", "parameters", "compute", "memory", "checkpoint"):
            assert answer[part] == expected[part], part
        assert answer["width"]["verdict"] == "narrow: 2n/d <= m < n" and answer["width"]["two_n_over_d"] == 20.0
        assert answer["parameters"]["total"] == 40 * 20 + 20
        assert answer["data"] == {"n_train": 200, "n_test": 0, "sample_shape": [20], "outputs": 1,
                                  "task": "regression"}
        assert answer["queue"]["name"] == "cpu" and answer["queue"]["yours_queued"] == 0
        assert len(answer["spec_hash"]) == 64 and answer["reusable_job_id"] is None
        assert answer["warnings"] == []
        assert job_count(api) == before
        assert api.drain_queue("cpu") == [] and api.drain_queue("gpu") == []

    async def test_dry_run_on_submit_is_the_same_plan(self, api: Api) -> None:
        user = api.new_user()
        before = job_count(api)
        response = await api.client.post("/v1/jobs", params={"dry_run": "true"}, json=PAPER_LIKE, headers=user)
        assert response.status_code == 200, response.text
        assert response.json() == await plan(api, user, PAPER_LIKE)
        assert job_count(api) == before and api.drain_queue("cpu") == []

    @pytest.mark.parametrize("body", [
        spec(model={"arch": "shallow", "width": 5}),  # odd width in the constrained regime
        spec(optim={"name": "gd", "lr": 0.1}),  # no iterations or epochs
        spec(model={"arch": "shallow", "width": 4, "widht": 4}),  # unknown field
        spec(data={"source": "npz", "path": "/etc/passwd"}),  # paths are for the command line
        spec(data={"source": "dataset", "name": "nowhere"}),  # no such dataset
        spec(model={"arch": "shallow", "width": 10**6}),  # over the width cap
    ])
    async def test_refuses_exactly_what_submit_refuses(self, api: Api, body: dict[str, Any]) -> None:
        user = api.new_user()
        planned = await api.client.post("/v1/plan", json=body, headers=user)
        dry = await api.client.post("/v1/jobs?dry_run=true", json=body, headers=user)
        submitted = await api.client.post("/v1/jobs", json=body, headers=user)
        assert planned.status_code == dry.status_code == submitted.status_code == 422
        assert planned.json() == dry.json() == submitted.json()

    async def test_needs_a_key_and_json(self, api: Api) -> None:
        assert (await api.client.post("/v1/plan", json=SPEC)).status_code == 401
        response = await api.client.post("/v1/plan", content=b"{}", headers={**api.new_user(),
                                                                            "Content-Type": "text/plain"})
        assert response.status_code == 415

    async def test_an_uploaded_datasets_n_and_d_come_from_its_row(self, api: Api) -> None:
        user = api.new_user()
        rng = np.random.default_rng(0)
        buffer = io.BytesIO()
        np.savez(buffer, X=rng.normal(size=(60, 7)), y=rng.normal(size=(60, 2)))
        dataset = (await api.client.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue())},
                                         data={"name": "toy"}, headers=user)).json()
        assert dataset["output_dim"] == 2
        body = spec(model={"arch": "shallow", "width": 30},
                    data={"source": "dataset", "name": "toy", "test_fraction": 0.25})
        answer = await plan(api, user, body)
        assert answer["spec"]["data"]["id"] == dataset["id"]
        assert answer["data"] == {"n_train": 45, "n_test": 15, "sample_shape": [7], "outputs": 2,
                                  "task": "regression"}
        assert (answer["width"]["n"], answer["width"]["d"], answer["width"]["m"]) == (45, 7, 30)
        assert answer["parameters"]["outer"] == 15 * 2
        # Another upload of the same bytes is the same data: the hash follows content, not ids.
        again = (await api.client.post("/v1/datasets", files={"file": ("e.npz", buffer.getvalue())},
                                       data={"name": "toy"}, headers=user)).json()
        assert again["id"] != dataset["id"]
        assert (await plan(api, user, body))["spec_hash"] == answer["spec_hash"]

    async def test_built_in_sources_without_files_get_a_warning_and_no_hash(self, api_factory: ApiFactory,
                                                                           tmp_path) -> None:
        async with api_factory(data_dir=tmp_path / "no-data") as api:
            body = spec(model={"arch": "mlp", "hidden": [64, 32]}, data={"source": "mnist"},
                        loss="cross_entropy", optim={"name": "sgd", "lr": 0.01, "batch_size": 64, "epochs": 1})
            answer = await plan(api, api.new_user(), body)
        assert answer["spec_hash"] is None
        assert answer["width"]["n"] == 60_000 and answer["data"]["sample_shape"] == [1, 28, 28]
        assert "data_files_unreadable" in {w["code"] for w in answer["warnings"]}

    async def test_a_job_that_would_fail_is_an_error_warning_without_counts(self, api: Api) -> None:
        user = api.new_user()
        rng = np.random.default_rng(1)
        buffer = io.BytesIO()
        np.savez(buffer, X=rng.normal(size=(20, 5)), y=rng.integers(0, 3, size=20))
        await api.client.post("/v1/datasets", files={"file": ("t.npz", buffer.getvalue())}, data={"name": "tab"},
                              headers=user)
        body = spec(model={"arch": "resnet18", "block4_width": 8}, data={"source": "dataset", "name": "tab"},
                    loss="cross_entropy", optim={"name": "sgd", "lr": 0.1, "batch_size": 4, "iterations": 3})
        answer = await plan(api, user, body)
        assert [(w["level"], w["field"]) for w in answer["warnings"]] == [("error", "model.arch")]
        assert answer["parameters"] is None and answer["estimate"]["seconds"] is None


class TestQueueAndEstimate:
    async def test_queue_depth_counts_every_users_waiting_jobs(self, api: Api) -> None:
        user, other = api.new_user(), api.new_user("other")
        gpu = spec(device="cuda")
        before = (await plan(api, user, gpu))["queue"]
        for _ in range(3):
            assert (await api.client.post("/v1/jobs", json=gpu, headers=other)).status_code == 201
        assert (await api.client.post("/v1/jobs", json=gpu, headers=user)).status_code == 201
        after = (await plan(api, user, gpu))["queue"]
        assert after["name"] == "gpu"
        assert after["queued"] == before["queued"] + 4
        assert after["yours_queued"] == 1 and after["yours_cap"] == api.settings.max_queued_jobs_per_user
        api.drain_queue("gpu")

    async def test_at_the_queued_cap_the_plan_says_a_submit_would_be_refused(self, api_factory: ApiFactory) -> None:
        async with api_factory(max_queued_jobs_per_user=1) as api:
            user = api.new_user()
            assert "queued_jobs_cap" not in {w["code"] for w in (await plan(api, user, SPEC))["warnings"]}
            assert (await api.client.post("/v1/jobs", json=SPEC, headers=user)).status_code == 201
            assert "queued_jobs_cap" in {w["code"] for w in (await plan(api, user, SPEC))["warnings"]}
            assert (await api.client.post("/v1/jobs", json=SPEC, headers=user)).status_code == 429

    async def test_run_time_comes_from_the_queues_measured_throughput(self, api: Api) -> None:
        user = api.new_user()
        body = spec(model={"arch": "mlp", "hidden": [16, 8]}, data={"source": "digits"}, device="cuda",
                    loss="cross_entropy", optim={"name": "sgd", "lr": 0.1, "batch_size": 32, "epochs": 4})
        first = await plan(api, user, body)
        assert first["queue"]["name"] == "gpu"
        assert first["estimate"]["seconds"] is None
        assert first["estimate"]["basis"].startswith("no estimate yet")

        per_step = first["compute"]["flops_per_step"]
        now = utcnow()
        # Two runs with steps of about this size (rates 1 and 3 GFLOP/s), one far smaller (ignored), and a
        # CPU-queue run (another queue: ignored).
        rows = [("gpu", per_step, 1e9, 2.0), ("gpu", per_step * 2, 3e9, 4.0), ("gpu", per_step / 100, 1e6, 50.0),
                ("cpu", per_step, 1e12, 0.0)]
        with api.session() as s:
            for i, (queue, step_flops, rate, setup) in enumerate(rows):
                throughput_repo.record(s, ThroughputSample(
                    queue=queue, arch="mlp", device="cuda: test", job_id=f"j{i}", steps=100,
                    flops=100 * step_flops, flops_per_step=step_flops, seconds=100 * step_flops / rate,
                    setup_seconds=setup, recorded_at=now - timedelta(seconds=10 - i)))
        estimate = (await plan(api, user, body))["estimate"]
        assert estimate["samples"] == 2 and estimate["devices"] == ["cuda: test"]
        assert estimate["flops_per_second"] == pytest.approx(2e9)  # the median of 1 and 3
        assert estimate["setup_seconds"] == pytest.approx(3.0)
        assert estimate["seconds"] == pytest.approx(3.0 + first["compute"]["flops_per_run"] / 2e9)

    async def test_the_sample_window_keeps_the_newest(self, api: Api) -> None:
        now = utcnow()
        with api.session() as s:
            for i in range(throughput_repo.WINDOW + 5):
                throughput_repo.record(s, ThroughputSample(
                    queue="cpu", arch="resnet18", device="cpu", job_id=f"w{i}", steps=1, flops=1.0,
                    flops_per_step=1.0, seconds=1.0, setup_seconds=0.0, recorded_at=now + timedelta(seconds=i)))
        with api.session() as s:
            kept = throughput_repo.recent(s, "cpu", "resnet18")
            assert len(kept) == throughput_repo.WINDOW
            assert kept[0].job_id == f"w{throughput_repo.WINDOW + 4}" and kept[-1].job_id == "w5"
            assert s.scalar(select(func.count()).select_from(ThroughputSample)
                            .where(ThroughputSample.arch == "resnet18")) == throughput_repo.WINDOW


class TestManySpecs:
    """A sweep is its configs' specs: plan_specs and reusable_jobs take a list (the sweep routes build on them)."""

    async def test_plans_of_several_specs_share_the_queue_state_and_match_one_by_one(self, api: Api) -> None:
        user = api.new_user()
        done = (await api.client.post("/v1/jobs", json=spec(seed=4), headers=user)).json()
        finish(api, done["id"])
        bodies = [spec(seed=4), spec(seed=5), spec(seed=4, name="same-again"), spec(device="cuda")]
        specs = [JobSpec.model_validate(b) for b in bodies]
        owner_id = api.owner_id(user)
        with api.session() as s:
            owner = s.get_one(ApiKey, owner_id)
            many = plan_specs(s, owner, specs, api.settings, api.runtime.artifacts)
            hashes = [spec_hash_of(s, owner, one, api.settings) for one in specs]
            found = reusable_jobs(s, owner, [*hashes, None], api.runtime.artifacts)
        one_by_one = [await plan(api, user, b) for b in bodies]
        assert [p.model_dump(mode="json") for p in many] == one_by_one
        assert [p["reusable_job_id"] for p in one_by_one] == [done["id"], None, done["id"], None]
        assert [j.id if j else None for j in found] == [done["id"], None, done["id"], None, None]
        assert [p["queue"]["name"] for p in one_by_one] == ["cpu", "cpu", "cpu", "gpu"]
        api.drain_queue("cpu")
