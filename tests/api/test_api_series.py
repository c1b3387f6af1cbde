"""GET /v1/series: one metric of several jobs, full resolution or reduced to the min and max of each step bucket
(deterministic, every spike kept), on SQLite and PostgreSQL; each answer the same whether a job's points are read
one by one (a running job) or from the series its finish packed (core/repositories/series.py)."""

from __future__ import annotations

import math
import random

import pytest
from sqlalchemy import delete

from core.db.models import MetricPoint
from core.repositories.series import store_series
from tests.api.conftest import SPEC, Api, spec

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[False, True], ids=["points", "packed"])
def packed(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def noisy_curve(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [math.exp(-i / 400) + 0.01 * rng.random() for i in range(n)]


async def job_with_points(api: Api, user: dict[str, str], values: list[float | None], every: int = 10,
                          extra: dict[str, float] | None = None, *, packed: bool = False) -> str:
    """A job with these train_loss points; packed: and its series packed, as the worker's finish packs them."""
    job_id: str = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
    with api.session() as s:
        s.add_all([MetricPoint(job_id=job_id, step=i * every, attempt=1,
                               values={"train_loss": v, "note": "text", **(extra or {})})
                   for i, v in enumerate(values)])
    if packed:
        with api.session() as s:
            store_series(s, job_id)
    return job_id


class TestSeries:
    async def test_full_resolution_in_the_order_asked(self, api: Api, packed: bool) -> None:
        user = api.new_user()
        a = await job_with_points(api, user, [3.0, 2.0, None, 1.0], packed=packed)
        b = await job_with_points(api, user, [5.0, 4.0], packed=packed)
        page = (await api.client.get(f"/v1/series?job_ids={b},{a}", headers=user)).json()
        assert page["points"] is None and [s["job_id"] for s in page["series"]] == [b, a]
        assert page["series"][0] == {"job_id": b, "steps": [0, 10], "values": [5.0, 4.0]}
        assert page["series"][1]["steps"] == [0, 10, 30]  # a null value is no point

    async def test_reduction_keeps_every_spike_and_both_ends_and_is_deterministic(self, api: Api, packed: bool) -> None:
        user = api.new_user()
        values = noisy_curve(5000, seed=1)
        spikes = {1234: 50.0, 3777: -20.0, 4999: 9.0}
        for i, v in spikes.items():
            values[i] = v
        job_id = await job_with_points(api, user, values, packed=packed)
        url = f"/v1/series?job_ids={job_id}&points=200"
        first = (await api.client.get(url, headers=user)).json()["series"][0]
        assert first == (await api.client.get(url, headers=user)).json()["series"][0]
        assert len(first["steps"]) <= 202 and first["steps"] == sorted(first["steps"])
        kept = dict(zip(first["steps"], first["values"], strict=True))
        for i, v in spikes.items():
            assert kept[i * 10] == v
        assert first["steps"][0] == 0 and first["steps"][-1] == 49990
        # Each of the 100 buckets keeps exactly its min and its max, so the envelope is the full series'.
        buckets: dict[int, list[float]] = {}
        for i, v in enumerate(values):
            buckets.setdefault(i * 100 // 5000, []).append(v)
        for bucket in buckets.values():
            assert min(bucket) in first["values"] and max(bucket) in first["values"]

    async def test_a_step_range_reads_that_part_in_detail(self, api: Api, packed: bool) -> None:
        user = api.new_user()
        job_id = await job_with_points(api, user, noisy_curve(3000, seed=2), packed=packed)
        page = (await api.client.get(f"/v1/series?job_ids={job_id}&points=100&from_step=1000&to_step=1990",
                                     headers=user)).json()
        steps = page["series"][0]["steps"]
        assert steps[0] == 1000 and steps[-1] == 1990 and len(steps) == 100  # 100 points in range: all kept
        assert (await api.client.get(f"/v1/series?job_ids={job_id}&from_step=9&to_step=1",
                                     headers=user)).status_code == 422

    async def test_other_metrics_and_non_numbers(self, api: Api, packed: bool) -> None:
        user = api.new_user()
        job_id = await job_with_points(api, user, [1.0, 0.5], extra={"w_dist": 0.3}, packed=packed)
        w = (await api.client.get(f"/v1/series?job_ids={job_id}&metric=w_dist&points=10", headers=user)).json()
        assert w["series"][0]["values"] == [0.3, 0.3]
        text = (await api.client.get(f"/v1/series?job_ids={job_id}&metric=note", headers=user)).json()
        assert text["series"][0] == {"job_id": job_id, "steps": [], "values": []}

    async def test_bad_requests_name_the_field(self, api: Api, packed: bool) -> None:
        user = api.new_user()
        job_id = await job_with_points(api, user, [1.0], packed=packed)
        for query, field in ((f"job_ids={job_id}&metric=a-b", "metric"), ("job_ids=,", "job_ids"),
                             ("job_ids=../../x", "job_ids"), (f"job_ids={job_id}&points=1", "points"),
                             ("job_ids=" + ",".join(f"{i:032x}" for i in range(501)), "job_ids")):
            response = await api.client.get(f"/v1/series?{query}", headers=user)
            assert response.status_code == 422, query
            assert response.json()["error"]["fields"][0]["field"] == f"query.{field}", query
        missing = await api.client.get(f"/v1/series?job_ids={job_id},{'f' * 32}", headers=user)
        assert missing.status_code == 404 and "f" * 32 in missing.json()["error"]["message"]
        many = await api.client.post("/v1/jobs", json=spec(name="empty"), headers=user)
        empty = (await api.client.get(f"/v1/series?job_ids={many.json()['id']}", headers=user)).json()
        assert empty["series"][0]["steps"] == []


async def test_a_finished_jobs_chart_comes_from_its_packed_series_beside_a_running_jobs_points(api: Api) -> None:
    user = api.new_user()
    finished = await job_with_points(api, user, noisy_curve(500, seed=3), packed=True)
    running = await job_with_points(api, user, [4.0, 3.0, 2.0])
    url = f"/v1/series?job_ids={running},{finished}&points=50"
    before = (await api.client.get(url, headers=user)).json()
    with api.session() as s:  # the packed series alone answers for the finished job now
        s.execute(delete(MetricPoint).where(MetricPoint.job_id == finished))
    after = (await api.client.get(url, headers=user)).json()
    assert after == before
    assert after["series"][0] == {"job_id": running, "steps": [0, 10, 20], "values": [4.0, 3.0, 2.0]}
    assert len(after["series"][1]["steps"]) > 50 and after["series"][1]["steps"][-1] == 4990
