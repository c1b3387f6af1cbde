"""Sweeps planned and reused, against a real database and a real broker queue: POST /v1/plan with a sweep body and
POST /v1/sweeps?dry_run=true (per-config and total counts, packs and why configs train apart, the submit's 422s,
nothing written or sent), and 'Reuse: succeeded' on a sweep (configs already trained point at those jobs, only the
rest are queued; never another user's job, never a failed or cancelled one)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from core.db.models import Job, JobStatus, MetricPoint, Sweep, utcnow
from tests.api.conftest import Api, ApiFactory
from tests.api.test_api_metrics_checkpoints import write_checkpoint
from tests.api.test_api_sweeps import BASE, GRID, body

pytestmark = pytest.mark.anyio
REUSE = {"Reuse": "succeeded"}


def owned(api: Api, user: dict[str, str], model: type) -> int:
    with api.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(model.owner_id == api.owner_id(user))) or 0


async def plan(api: Api, user: dict[str, str], sweep: dict[str, Any], *, reuse: bool = False) -> dict[str, Any]:
    response = await api.client.post("/v1/plan", json=sweep, headers={**user, **(REUSE if reuse else {})})
    assert response.status_code == 200, response.text
    return response.json()


async def submit(api: Api, user: dict[str, str], sweep: dict[str, Any], *, reuse: bool = False) -> dict[str, Any]:
    response = await api.client.post("/v1/sweeps", json=sweep, headers={**user, **(REUSE if reuse else {})})
    assert response.status_code == 201, response.text
    return response.json()


def train(api: Api, sweep: dict[str, Any], status: JobStatus = JobStatus.SUCCEEDED) -> None:
    """Leave every config as the worker leaves a finished one: its outcome, final metrics and a final checkpoint."""
    for n, job_id in enumerate(sweep["job_ids"]):
        write_checkpoint(api, job_id, 10, final=True)
        with api.session() as s:
            s.add_all([MetricPoint(job_id=job_id, step=step, attempt=1, values={"train_loss": 1.0 / (n + step + 1)})
                       for step in (0, 10)])
        api.update_job(job_id, status=status, started_at=utcnow(), finished_at=utcnow(), step=10,
                       final_metrics={"train_loss": 0.5 / (n + 1), "step": 10})
    api.drain_queue("cpu")


class TestPlanSweep:
    async def test_counts_each_config_and_the_totals_and_writes_nothing(self, api: Api) -> None:
        user = api.new_user()
        answer = await plan(api, user, body())

        assert (answer["name"], answer["axes"]) == ("figure4", list(GRID))
        assert [c["index"] for c in answer["configs"]] == list(range(16))
        # Each config's counts are what POST /v1/plan answers for that config's spec as a job.
        third = answer["configs"][3]
        assert third["params"] == {"regime": "regular", "constraint.radius": 1.0, "optim.lr_hidden": 0.1,
                                   "optim.lr_outer": 0.5}
        job_spec = {**BASE, "regime": "regular", "constraint": {"radius": 1.0},
                    "optim": {"name": "gd", "lr_hidden": 0.1, "lr_outer": 0.5, "iterations": 10}}
        as_job = await plan(api, user, job_spec)
        for part in ("spec_hash", "width", "parameters", "compute", "memory", "checkpoint", "estimate"):
            assert third[part] == as_job[part], part
        totals = answer["totals"]
        assert (totals["configs"], totals["to_train"], totals["reused"]) == (16, 16, 0)
        assert totals["parameters"] == sum(c["parameters"]["total"] for c in answer["configs"])
        assert totals["flops"] == pytest.approx(sum(c["compute"]["flops_per_run"] for c in answer["configs"]))
        assert totals["estimated_seconds"] is None and totals["configs_without_estimate"] == 16
        assert [q["name"] for q in answer["queues"]] == ["cpu"]
        assert owned(api, user, Job) == owned(api, user, Sweep) == 0
        assert api.drain_queue("cpu") == [] and api.drain_queue("gpu") == []

    async def test_packs_say_why_configs_train_apart(self, api: Api) -> None:
        answer = await plan(api, api.new_user(), body())
        packs = answer["packs"]
        # As the submit packs them: one pack per regime, the radius and learning rates batched.
        assert [(p["size"], p["vectorized"], p["queue"]) for p in packs] == [(8, True, "cpu"), (8, True, "cpu")]
        assert packs[0]["apart_because"] is None
        assert packs[1]["apart_because"].startswith("differs from pack 0 in regime")
        assert sorted(i for p in packs for i in p["configs"]) == list(range(16))
        assert all(c["pack"] == next(p["index"] for p in packs if c["index"] in p["configs"])
                   for c in answer["configs"])
        assert packs[0]["memory_bytes"] > max(c["memory"]["total"] for c in answer["configs"])
        assert answer["totals"]["largest_pack_memory_bytes"] == max(p["memory_bytes"] for p in packs)
        assert any(w["code"] == "configs_not_packed" and "regime" in w["message"] for w in answer["warnings"])

    async def test_deep_nets_and_a_memory_bound_are_reasons_too(self, api: Api) -> None:
        user = api.new_user()
        mlp = {**BASE, "regime": "regular", "model": {"arch": "mlp", "hidden": [8]}, "data": {"source": "digits"},
               "loss": "cross_entropy"}
        deep = await plan(api, user, body(base=mlp, grid={"optim.lr": [0.01, 0.1]}))
        assert [(p["size"], p["vectorized"]) for p in deep["packs"]] == [(1, False), (1, False)]
        assert "one at a time" in deep["packs"][1]["apart_because"]
        big = {**BASE, "model": {"arch": "shallow", "width": 4096}, "data": {"source": "synthetic", "n": 64,
                                                                              "d": 2048}}
        split = await plan(api, user, body(base=big, grid={"seed": list(range(8))}))
        assert len(split["packs"]) > 1
        assert split["packs"][1]["apart_because"].startswith("split from pack 0: at most ")

    async def test_dry_run_on_the_sweep_submit_is_the_same_plan(self, api: Api) -> None:
        user = api.new_user()
        response = await api.client.post("/v1/sweeps", params={"dry_run": "true"}, json=body(), headers=user)
        assert response.status_code == 200, response.text
        assert response.json() == await plan(api, user, body())
        assert owned(api, user, Job) == owned(api, user, Sweep) == 0
        assert api.drain_queue("cpu") == []

    @pytest.mark.parametrize("changes", [
        {"grid": {"model.widht": [4, 8]}},  # not an axis
        {"grid": {"model.width": [4, 5]}},  # odd width in the constrained regime
        {"grid": {"data.name": ["nowhere"]}, "base": {**BASE, "data": {"source": "dataset", "name": "x"}}},
        {"base": {**BASE, "data": {"source": "npz", "path": "/etc/passwd"}}},
        {"objective": {"metric": "accuracy", "mode": "sideways"}},
        {"base": {**BASE, "extra": 1}},
    ])
    async def test_refuses_exactly_what_the_sweep_submit_refuses(self, api: Api, changes: dict[str, Any]) -> None:
        user = api.new_user()
        planned = await api.client.post("/v1/plan", json=body(**changes), headers=user)
        dry = await api.client.post("/v1/sweeps?dry_run=true", json=body(**changes), headers=user)
        submitted = await api.client.post("/v1/sweeps", json=body(**changes), headers=user)
        assert planned.status_code == dry.status_code == submitted.status_code == 422, submitted.text
        assert planned.json() == dry.json() == submitted.json()
        assert owned(api, user, Job) == 0

    async def test_the_sweep_caps_hold_for_a_plan(self, api_factory: ApiFactory) -> None:
        async with api_factory(max_sweep_configs=10, max_queued_sweep_configs_per_user=12) as api:
            user = api.new_user()
            over = await api.client.post("/v1/plan", json=body(), headers=user)
            assert over.status_code == 422
            assert over.json()["error"]["fields"] == [
                {"field": "grid", "reason": "16 configs (2 x 2 x 2 x 2), more than the 10 a sweep may have"}]
            small = body(grid={"optim.lr_hidden": [0.01, 0.1], "optim.lr_outer": [0.05, 0.5, 1.0]})
            await submit(api, user, small)
            answer = await plan(api, user, small)
            assert (answer["queued_configs"], answer["queued_configs_cap"]) == (6, 12)
            assert "queued_configs_cap" not in [w["code"] for w in answer["warnings"]]
            bigger = body(grid={"optim.lr_hidden": [0.01, 0.1], "optim.lr_outer": [0.05, 0.5, 1.0, 2.0]})
            warned = await plan(api, user, bigger)
            assert any(w["code"] == "queued_configs_cap" and "429" in w["message"] for w in warned["warnings"])
            assert (await api.client.post("/v1/sweeps", json=bigger, headers=user)).status_code == 429
            api.drain_queue("cpu")


class TestReuseSweep:
    async def test_resubmitting_a_finished_sweep_trains_nothing_and_gives_the_same_results(self, api: Api) -> None:
        user = api.new_user()
        first = await submit(api, user, body())
        train(api, first)

        planned = await plan(api, user, body(), reuse=True)
        assert (planned["totals"]["to_train"], planned["totals"]["reused"], planned["packs"]) == (0, 16, [])
        assert [c["reusable_job_id"] for c in planned["configs"]] == first["job_ids"]

        again = await submit(api, user, body(name="figure4-again"), reuse=True)
        assert again["status"] == "succeeded" and again["counts"]["succeeded"] == 16 and again["packs"] == []
        assert any("16 config(s) reuse" in note for note in again["notes"])
        assert api.drain_queue("cpu") == []  # nothing was sent to train

        old = (await api.client.get(f"/v1/sweeps/{first['id']}/results", headers=user)).json()["items"]
        new = (await api.client.get(f"/v1/sweeps/{again['id']}/results", headers=user)).json()["items"]
        assert [r["reused_from"] for r in new] == first["job_ids"]
        assert [(r["params"], r["status"], r["final_metrics"]) for r in new] == [
            (r["params"], r["status"], r["final_metrics"]) for r in old]
        summaries = [(await api.client.get(f"/v1/sweeps/{s['id']}/summary", headers=user)).json()
                     for s in (first, again)]
        assert summaries[1]["panels"][0]["cells"][0][0]["value"] == summaries[0]["panels"][0]["cells"][0][0]["value"]
        heatmap = await api.client.get(f"/v1/sweeps/{again['id']}/heatmap.svg", headers=user)
        assert heatmap.status_code == 200 and b"<svg" in heatmap.content
        # A reused config's job carries where its result is, and its checkpoint is that job's.
        job = (await api.client.get(f"/v1/jobs/{again['job_ids'][5]}", headers=user)).json()
        assert (job["status"], job["reused_from"], job["sweep_id"]) == ("succeeded", first["job_ids"][5], again["id"])
        mine = await api.client.get(f"/v1/jobs/{again['job_ids'][5]}/checkpoint", headers=user)
        theirs = await api.client.get(f"/v1/jobs/{first['job_ids'][5]}/checkpoint", headers=user)
        assert mine.status_code == 200 and mine.content == theirs.content
        # So are its metrics: as a series, in the compare view's series and on its event stream.
        points = [(await api.client.get(f"/v1/jobs/{i}/metrics", headers=user)).json()["points"]
                  for i in (again["job_ids"][5], first["job_ids"][5])]
        assert points[0] == points[1] and len(points[0]) == 2
        series = (await api.client.get("/v1/series", headers=user, params={
            "job_ids": f"{again['job_ids'][5]},{first['job_ids'][5]}"})).json()["series"]
        assert series[0]["values"] == series[1]["values"] and len(series[0]["values"]) == 2
        events = await api.client.get(f"/v1/jobs/{again['job_ids'][5]}/events", headers=user)
        assert events.status_code == 200 and events.text.count("event: metrics") >= 1

    async def test_a_partly_overlapping_grid_queues_only_the_new_configs(self, api: Api) -> None:
        user = api.new_user()
        first = await submit(api, user, body())
        train(api, first)
        wider = body(grid={**GRID, "optim.lr_outer": [0.05, 0.5, 5.0]})  # 24 configs, 16 of them trained

        planned = await plan(api, user, wider, reuse=True)
        assert (planned["totals"]["to_train"], planned["totals"]["reused"]) == (8, 16)
        again = await submit(api, user, wider, reuse=True)
        assert again["n_configs"] == 24 and again["counts"] == {**again["counts"], "succeeded": 16, "queued": 8}
        assert again["status"] == "running"  # some configs finished (the reused ones), some to go
        queued = sorted(j for p in again["packs"] for j in p["job_ids"])
        results = (await api.client.get(f"/v1/sweeps/{again['id']}/results", headers=user)).json()["items"]
        new = sorted(r["job_id"] for r in results if r["params"]["optim.lr_outer"] == 5.0)
        assert queued == new and len(new) == 8
        assert [p["size"] for p in planned["packs"]] == [len(p["job_ids"]) for p in again["packs"]] == [4, 4]
        messages = api.drain_queue("cpu")
        assert sorted(j for m in messages for j in m.payload[0][0]) == new
        assert all(r["reused_from"] is None for r in results if r["job_id"] in new)
        # An Idempotency-Key replay answers with the same packs: the reused configs are in none.
        headers = {**user, **REUSE, "Idempotency-Key": "wider-1"}
        made = await api.client.post("/v1/sweeps", json=wider, headers=headers)
        replay = await api.client.post("/v1/sweeps", json=wider, headers=headers)
        assert replay.status_code == 200 and replay.json()["packs"] == made.json()["packs"]
        api.drain_queue("cpu")

    async def test_another_users_identical_sweep_trains(self, api: Api) -> None:
        alice, bob = api.new_user("alice"), api.new_user("bob")
        train(api, await submit(api, alice, body()))
        planned = await plan(api, bob, body(), reuse=True)
        assert planned["totals"]["reused"] == 0 and all(c["reusable_job_id"] is None for c in planned["configs"])
        theirs = await submit(api, bob, body(), reuse=True)
        assert theirs["counts"]["queued"] == 16 and sum(len(p["job_ids"]) for p in theirs["packs"]) == 16
        assert len(api.drain_queue("cpu")) == 2

    @pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
    async def test_failed_or_cancelled_configs_train_again(self, api: Api, status: JobStatus) -> None:
        user = api.new_user()
        train(api, await submit(api, user, body()), status)
        again = await submit(api, user, body(), reuse=True)
        assert again["counts"]["queued"] == 16 and again["counts"]["succeeded"] == 0
        api.drain_queue("cpu")

    async def test_a_reused_config_is_not_itself_reused_the_trained_job_is(self, api: Api) -> None:
        user = api.new_user()
        first = await submit(api, user, body())
        train(api, first)
        second = await submit(api, user, body(), reuse=True)
        third = await submit(api, user, body(), reuse=True)
        results = (await api.client.get(f"/v1/sweeps/{third['id']}/results", headers=user)).json()["items"]
        assert [r["reused_from"] for r in results] == first["job_ids"]
        assert second["status"] == third["status"] == "succeeded"

    async def test_without_the_header_a_finished_sweep_trains_again(self, api: Api) -> None:
        user = api.new_user()
        train(api, await submit(api, user, body()))
        again = await submit(api, user, body())
        assert again["counts"]["queued"] == 16
        assert (await api.client.post("/v1/sweeps", json=body(), headers={**user, "Reuse": "always"})
                ).status_code == 422
        api.drain_queue("cpu")
