"""/v1/sweeps against a real database and a real broker queue: submission (configs as jobs, packs as messages),
bad grids, caps, idempotency, isolation, and the status, results, summary and heatmap of arranged outcomes."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from core.db.models import Job, JobStatus, Sweep, utcnow
from tests.api.conftest import SPEC, Api, ApiFactory

pytestmark = pytest.mark.anyio

BASE = {**SPEC, "name": "fig", "model": {"arch": "shallow", "width": 4},
        "optim": {"name": "gd", "lr": 0.1, "iterations": 10}}
GRID = {"regime": ["regular", "constrained"], "constraint.radius": [1.0, None],
        "optim.lr_hidden": [0.01, 0.1], "optim.lr_outer": [0.05, 0.5]}


def body(**changes: Any) -> dict[str, Any]:
    return {"name": "figure4", "base": BASE, "grid": GRID, "objective": {"metric": "train_loss", "mode": "min"},
            **changes}


def fields(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    return {f["field"]: f["reason"] for f in response.json()["error"]["fields"]}


async def submit(api: Api, user: dict[str, str], **changes: Any) -> dict[str, Any]:
    response = await api.client.post("/v1/sweeps", json=body(**changes), headers=user)
    assert response.status_code == 201, response.text
    return response.json()


def count(api: Api, model: type, **where: Any) -> int:
    with api.session() as s:
        return s.scalar(select(func.count()).select_from(model).filter_by(**where)) or 0


class TestSubmit:
    async def test_each_config_is_a_queued_job_and_each_pack_one_message(self, api: Api) -> None:
        user = api.new_user()
        response = await api.client.post("/v1/sweeps", json=body(), headers=user)

        assert response.status_code == 201
        sweep = response.json()
        assert response.headers["location"] == f"/v1/sweeps/{sweep['id']}"
        assert (sweep["status"], sweep["n_configs"], sweep["progress"]) == ("queued", 16, 0.0)
        assert sweep["counts"]["queued"] == 16 and sweep["axes"] == list(GRID)
        assert len(sweep["job_ids"]) == 16
        # One pack per regime: radius and learning rates are what the engine batches.
        assert [len(p["job_ids"]) for p in sweep["packs"]] == [8, 8]
        assert all(p["vectorized"] for p in sweep["packs"])
        messages = api.drain_queue("cpu")
        assert sorted((m.headers["task"], tuple(m.payload[0][0])) for m in messages) == sorted(
            ("narrownet.run_pack", tuple(p["job_ids"])) for p in sweep["packs"])

        third = await api.client.get(f"/v1/jobs/{sweep['job_ids'][3]}", headers=user)
        job = third.json()
        assert job["sweep_id"] == sweep["id"] and job["status"] == "queued"
        assert job["params"] == {"regime": "regular", "constraint.radius": 1.0, "optim.lr_hidden": 0.1,
                                 "optim.lr_outer": 0.5}
        assert (job["spec"]["optim"]["lr_hidden"], job["spec"]["optim"]["lr_outer"]) == (0.1, 0.5)
        listed = await api.client.get("/v1/jobs", params={"sweep_id": sweep["id"], "limit": 200}, headers=user)
        assert sorted(j["id"] for j in listed.json()["items"]) == sorted(sweep["job_ids"])

    async def test_deep_net_configs_run_one_per_pack_and_the_answer_says_so(self, api: Api) -> None:
        mlp = {**BASE, "regime": "regular", "model": {"arch": "mlp", "hidden": [8]}, "data": {"source": "digits"},
               "loss": "cross_entropy"}
        sweep = await submit(api, api.new_user(), base=mlp, grid={"optim.lr": [0.01, 0.1]})
        assert [(len(p["job_ids"]), p["vectorized"]) for p in sweep["packs"]] == [(1, False), (1, False)]
        assert any("one job per pack" in note for note in sweep["notes"])
        assert sorted(m.headers["task"] for m in api.drain_queue("cpu")) == ["narrownet.run_job"] * 2

    async def test_an_idempotent_resubmission_is_the_same_sweep(self, api: Api) -> None:
        user = {**api.new_user(), "Idempotency-Key": "fig4-1"}
        first = await api.client.post("/v1/sweeps", json=body(), headers=user)
        again = await api.client.post("/v1/sweeps", json=body(), headers=user)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == first.json()["id"] and again.json()["job_ids"] == first.json()["job_ids"]
        assert again.json()["packs"] == first.json()["packs"]
        assert len(api.drain_queue("cpu")) == 2  # sent once
        other = await api.client.post("/v1/sweeps", json=body(name="other"), headers=user)
        assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
        assert count(api, Job, sweep_id=first.json()["id"]) == 16


class TestBadGrids:
    @pytest.mark.parametrize("grid,field,reason", [
        ({"model.width": [4, 5]}, "grid.model.width[1]", "5 must be even in the constrained regime (it pairs neurons)"),
        ({"optim.lr_hidden": [0.1, -1]}, "grid.optim.lr_hidden[1]", "-1 is invalid: Input should be greater than 0"),
        ({"seed": [1, 1]}, "grid.seed[1]", "1 repeats grid.seed[0]"),
        ({"seed": []}, "grid.seed", "give at least one value"),
    ])
    async def test_a_bad_value_names_axis_index_value_and_reason(self, api: Api, grid, field, reason) -> None:
        response = await api.client.post("/v1/sweeps", json=body(grid=grid), headers=api.new_user())
        assert fields(response) == {field: reason}

    async def test_an_unknown_axis_lists_the_allowed_ones(self, api: Api) -> None:
        found = fields(await api.client.post("/v1/sweeps", json=body(grid={"model.depth": [1]}),
                                             headers=api.new_user()))
        assert found["grid.model.depth"].startswith("unknown axis; allowed: ")
        assert "model.width" in found["grid.model.depth"] and "optim.lr_hidden" in found["grid.model.depth"]

    async def test_a_bad_base_is_named_inside_base(self, api: Api) -> None:
        bad = {**BASE, "model": {"arch": "shallow", "width": 5}}
        found = fields(await api.client.post("/v1/sweeps", json=body(base=bad), headers=api.new_user()))
        assert found == {"base.model.width": "5 must be even in the constrained regime (it pairs neurons)"}

    async def test_data_the_service_cannot_read_is_named(self, api: Api) -> None:
        user = api.new_user()
        npz = {**BASE, "data": {"source": "npz", "path": "/etc/passwd"}}
        assert list(fields(await api.client.post("/v1/sweeps", json=body(base=npz), headers=user))) == [
            "base.data.source"]
        dataset = {**BASE, "data": {"source": "dataset", "id": "a" * 32}}
        found = fields(await api.client.post("/v1/sweeps", json=body(base=dataset, grid={"data.id": ["b" * 32]}),
                                             headers=user))
        assert list(found) == ["grid.data.id[0]"] and "no dataset" in found["grid.data.id[0]"]

    async def test_more_configs_than_a_sweep_may_have(self, api_factory: ApiFactory) -> None:
        async with api_factory(max_sweep_configs=10) as api:
            found = fields(await api.client.post("/v1/sweeps", json=body(), headers=api.new_user()))
            assert found == {"grid": "16 configs (2 x 2 x 2 x 2), more than the 10 a sweep may have"}

    async def test_nothing_was_recorded_or_sent(self, api: Api) -> None:
        user = api.new_user()
        await api.client.post("/v1/sweeps", json=body(grid={"model.width": [4, 5]}), headers=user)
        with api.session() as s:
            owner = api.owner_id(user)
            assert s.scalar(select(func.count()).select_from(Sweep).where(Sweep.owner_id == owner)) == 0
            assert s.scalar(select(func.count()).select_from(Job).where(Job.owner_id == owner)) == 0
        assert api.drain_queue("cpu") == []


class TestCaps:
    async def test_queued_configs_per_user_are_capped_with_retry_after(self, api_factory: ApiFactory) -> None:
        async with api_factory(max_queued_sweep_configs_per_user=20, max_queued_jobs_per_user=1) as api:
            user = api.new_user()
            await submit(api, user)
            over = await api.client.post("/v1/sweeps", json=body(), headers=user)
            assert over.status_code == 429 and over.json()["error"]["code"] == "too_many_queued_configs"
            assert int(over.headers["retry-after"]) > 0
            # Sweep configs have their own cap: a single job is still accepted.
            assert (await api.client.post("/v1/jobs", json=SPEC, headers=user)).status_code == 201
            assert (await api.client.post("/v1/jobs", json=SPEC, headers=user)).status_code == 429


def arrange(api: Api, sweep: dict[str, Any], outcomes: dict[int, dict[str, Any]]) -> None:
    """Set configs' rows as a worker would have left them."""
    for index, values in outcomes.items():
        api.update_job(sweep["job_ids"][index], **values)


def done(loss: float | None, **more: Any) -> dict[str, Any]:
    metrics = {"train_loss": loss, "w_dist": 0.5}
    return {"status": JobStatus.SUCCEEDED, "step": 10, "final_metrics": metrics, "finished_at": utcnow(), **more}


class TestReading:
    async def test_status_progress_best_and_results(self, api: Api) -> None:
        user = api.new_user()
        sweep = await submit(api, user)
        started = utcnow() - timedelta(seconds=10)
        arrange(api, sweep, {0: done(0.3, started_at=started), 5: done(0.01, started_at=started),
                             6: {"status": JobStatus.RUNNING, "step": 5, "started_at": started,
                                 "latest_metrics": {"train_loss": 0.2}},
                             7: {"status": JobStatus.FAILED, "error": "TrainingDiverged: at step 3",
                                 "finished_at": utcnow()}})
        got = (await api.client.get(f"/v1/sweeps/{sweep['id']}", headers=user)).json()
        assert got["status"] == "running"
        assert {k: v for k, v in got["counts"].items() if v} == {"queued": 12, "running": 1, "succeeded": 2,
                                                                 "failed": 1}
        assert got["progress"] == pytest.approx((3 + 13 * 5 / 130) / 16)
        assert got["eta_seconds"] > 0
        assert got["best"] == {"job_id": sweep["job_ids"][5], "index": 5, "metric": "train_loss", "value": 0.01,
                               "status": "succeeded", "final": True, "params": {
                                   "regime": "regular", "constraint.radius": None, "optim.lr_hidden": 0.01,
                                   "optim.lr_outer": 0.5}}

        results = (await api.client.get(f"/v1/sweeps/{sweep['id']}/results", headers=user)).json()
        assert [r["index"] for r in results["items"]] == list(range(16))
        assert results["items"][5]["final_metrics"] == {"train_loss": 0.01, "w_dist": 0.5}
        assert results["items"][7]["error"] == "TrainingDiverged: at step 3"
        text = (await api.client.get(f"/v1/sweeps/{sweep['id']}/results", params={"format": "csv"},
                                     headers=user)).text
        table = list(csv.reader(io.StringIO(text)))
        assert table[0] == ["index", "job_id", "status", *GRID, "train_loss", "w_dist", "error"]
        assert len(table) == 17 and table[6][:3] == ["5", sweep["job_ids"][5], "succeeded"]
        assert table[6][3:] == ["regular", "", "0.01", "0.5", "0.01", "0.5", ""]

        page = (await api.client.get("/v1/sweeps", headers=user)).json()
        assert [(s["id"], s["status"], s["counts"]["succeeded"]) for s in page["items"]] == [
            (sweep["id"], "running", 2)]
        assert page["items"][0]["best_value"] == got["best_value"] == 0.01  # the list reads it in one query

    async def test_the_listed_best_so_far_follows_each_sweeps_objective(self, api: Api) -> None:
        user = api.new_user()
        low = await submit(api, user, grid={"seed": [1, 2, 3]})
        high = await submit(api, user, grid={"seed": [1, 2, 3]}, objective={"metric": "w_dist", "mode": "max"})
        none = await submit(api, user, grid={"seed": [1, 2]})
        for sweep in (low, high):  # a running config counts by its latest value; a failed one never
            arrange(api, sweep, {0: done(0.3, final_metrics={"train_loss": 0.3, "w_dist": 0.2}),
                                 1: {"status": JobStatus.RUNNING, "latest_metrics": {"train_loss": 0.1, "w_dist": 0.9}},
                                 2: {"status": JobStatus.FAILED, "latest_metrics": {"train_loss": 0.01,
                                                                                   "w_dist": 5.0}}})
        arrange(api, none, {0: done(None, final_metrics={"train_loss": None, "w_dist": "x"})})
        page = (await api.client.get("/v1/sweeps", headers=user)).json()
        assert {s["id"]: s["best_value"] for s in page["items"]} == {low["id"]: 0.1, high["id"]: 0.9,
                                                                   none["id"]: None}
        for sweep in (low, high):
            one = (await api.client.get(f"/v1/sweeps/{sweep['id']}", headers=user)).json()
            assert one["best_value"] == one["best"]["value"]

    async def test_a_null_metric_is_null_and_never_wins(self, api: Api) -> None:
        user = api.new_user()
        sweep = await submit(api, user, grid={"seed": [1, 2]})
        arrange(api, sweep, {0: done(None), 1: done(0.4)})
        got = (await api.client.get(f"/v1/sweeps/{sweep['id']}", headers=user)).json()
        assert got["status"] == "succeeded" and got["best"]["job_id"] == sweep["job_ids"][1]
        assert got["finished_at"] is not None and got["progress"] == 1.0
        text = (await api.client.get(f"/v1/sweeps/{sweep['id']}/results?format=csv", headers=user)).text
        assert "nan" not in text.lower() and "inf" not in text.lower()

    async def test_summary_is_the_best_per_cell_with_its_job(self, api: Api) -> None:
        user = api.new_user()
        sweep = await submit(api, user)
        ids = sweep["job_ids"]
        # Config index = 8 regime + 4 radius + 2 lr_hidden + lr_outer.
        arrange(api, sweep, {0: done(0.5), 1: done(0.2), 3: done(0.9), 4: done(0.05), 12: done(0.7),
                             13: {"status": JobStatus.FAILED}})
        response = await api.client.get(f"/v1/sweeps/{sweep['id']}/summary", headers=user, params={
            "rows": "constraint.radius", "cols": "optim.lr_hidden", "split": "regime"})
        assert response.status_code == 200, response.text
        table = response.json()
        assert (table["metric"], table["reduce"]) == ("train_loss", "min")
        assert table["metrics"] == ["train_loss", "w_dist"]  # what the succeeded configs recorded, for a selector
        assert table["rows"] == {"axis": "constraint.radius", "values": [1.0, None]}
        assert table["split"]["values"] == ["regular", "constrained"]
        regular, constrained = table["panels"]
        cell = regular["cells"][0][0]  # radius 1, lr_hidden 0.01: configs 0 and 1
        assert (cell["value"], cell["job_id"], cell["configs"], cell["succeeded"]) == (0.2, ids[1], 2, 2)
        assert cell["params"]["optim.lr_outer"] == 0.5
        assert regular["cells"][0][1]["value"] == 0.9 and regular["cells"][1][0]["job_id"] == ids[4]
        assert constrained["cells"][1][0] == {"row": None, "col": 0.01, "value": 0.7, "job_id": ids[12],
                                              "params": sweep_params(12), "configs": 2, "succeeded": 1}
        assert constrained["cells"][0][0]["value"] is None and constrained["cells"][0][0]["job_id"] is None
        maxed = (await api.client.get(f"/v1/sweeps/{sweep['id']}/summary", headers=user, params={
            "rows": "constraint.radius", "cols": "optim.lr_hidden", "reduce": "max"})).json()
        assert maxed["split"] is None and maxed["reduce"] == "max"
        assert [c["value"] for c in maxed["panels"][0]["cells"][0]] == [0.5, 0.9]  # over regime and lr_outer too

    async def test_summary_parameters_must_be_axes_and_metrics(self, api: Api) -> None:
        user = api.new_user()
        sweep = await submit(api, user)
        url = f"/v1/sweeps/{sweep['id']}/summary"
        assert list(fields(await api.client.get(url, params={"rows": "model.width"}, headers=user))) == ["rows"]
        assert list(fields(await api.client.get(url, params={"rows": "regime", "cols": "regime"},
                                                headers=user))) == ["cols"]
        assert list(fields(await api.client.get(url, params={"metric": "loss"}, headers=user))) == ["metric"]

    async def test_heatmaps_draw_the_summary(self, api: Api) -> None:
        user = api.new_user()
        sweep = await submit(api, user)
        arrange(api, sweep, {0: done(0.5), 4: done(1e-9), 12: done(0.7)})
        params = {"rows": "constraint.radius", "cols": "optim.lr_hidden", "split": "regime"}
        png = await api.client.get(f"/v1/sweeps/{sweep['id']}/heatmap.png", params=params, headers=user)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
        svg = await api.client.get(f"/v1/sweeps/{sweep['id']}/heatmap.svg", params=params, headers=user)
        assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
        bad = await api.client.get(f"/v1/sweeps/{sweep['id']}/heatmap.png", params={"split": "nope"}, headers=user)
        assert list(fields(bad)) == ["split"]


def sweep_params(index: int) -> dict[str, Any]:
    keys = list(GRID)
    sizes = [len(GRID[k]) for k in keys]
    values, rest = {}, index
    for key, size in zip(reversed(keys), reversed(sizes), strict=True):
        values[key] = GRID[key][rest % size]
        rest //= size
    return {k: values[k] for k in keys}


class TestCancelAndIsolation:
    async def test_cancel_ends_queued_configs_and_asks_running_ones_to_stop(self, api: Api) -> None:
        user = api.new_user()
        sweep = await submit(api, user, grid={"seed": [1, 2, 3]})
        arrange(api, sweep, {0: done(0.1), 1: {"status": JobStatus.RUNNING, "started_at": utcnow()}})
        for _ in range(2):  # idempotent
            response = await api.client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=user)
            assert response.status_code == 200
        got = response.json()
        assert got["cancel_requested"] is True and got["status"] == "running"
        assert {k: v for k, v in got["counts"].items() if v} == {"succeeded": 1, "running": 1, "cancelled": 1}
        with api.session() as s:
            rows = {j.id: j for j in s.scalars(select(Job).where(Job.sweep_id == sweep["id"]))}
        assert rows[sweep["job_ids"][1]].cancel_requested and not rows[sweep["job_ids"][0]].cancel_requested
        arrange(api, sweep, {1: {"status": JobStatus.CANCELLED, "finished_at": utcnow()}})
        assert (await api.client.get(f"/v1/sweeps/{sweep['id']}", headers=user)).json()["status"] == "cancelled"

    async def test_a_cancel_after_every_config_finished_changes_nothing(self, api: Api) -> None:
        user = api.new_user()
        sweep = await submit(api, user, grid={"seed": [1, 2]})
        arrange(api, sweep, {0: done(0.1), 1: {"status": JobStatus.FAILED, "finished_at": utcnow()}})
        got = (await api.client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=user)).json()
        assert got["status"] == "succeeded" and got["counts"]["cancelled"] == 0

    async def test_another_users_sweep_is_a_404_everywhere(self, api: Api) -> None:
        alice, bob = api.new_user("alice"), api.new_user("bob")
        sweep = await submit(api, alice, grid={"seed": [1, 2]})
        base = f"/v1/sweeps/{sweep['id']}"
        for method, path in [("GET", ""), ("POST", "/cancel"), ("GET", "/results"), ("GET", "/summary"),
                             ("GET", "/heatmap.png"), ("GET", "/heatmap.svg")]:
            response = await api.client.request(method, base + path, headers=bob)
            assert response.status_code == 404, (path, response.text)
            assert sweep["id"] not in response.text or "no sweep" in response.text
        assert (await api.client.get("/v1/sweeps", headers=bob)).json()["items"] == []
        assert (await api.client.get("/v1/jobs", params={"sweep_id": sweep["id"]}, headers=bob)).json()["total"] == 0
        assert (await api.client.get(base, headers=alice)).json()["counts"]["queued"] == 2
