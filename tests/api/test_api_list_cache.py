"""GET /v1/jobs answered from pages kept for a moment: what a client can and cannot see (README, Configuration:
NARROWNET_API_LIST_CACHE_SECONDS)."""

from __future__ import annotations

import time
from datetime import timedelta

import anyio
import pytest

from core.db.models import JobStatus, utcnow
from tests.api.conftest import SPEC, Api, ApiFactory

pytestmark = pytest.mark.anyio


async def listed(api: Api, user: dict[str, str], **params: object) -> dict:
    response = await api.client.get("/v1/jobs", params=params, headers=user)
    assert response.status_code == 200, response.text
    return response.json()


async def submit(api: Api, user: dict[str, str]) -> str:
    response = await api.client.post("/v1/jobs", json=SPEC, headers=user)
    assert response.status_code == 201, response.text
    return response.json()["id"]


class TestKeptPages:
    async def test_a_change_made_elsewhere_shows_once_the_page_is_as_old_as_the_cache_allows(
            self, api_factory: ApiFactory) -> None:
        async with api_factory(api_list_cache_seconds=0.3) as api:
            user = api.new_user()
            job_id = await submit(api, user)
            assert [j["status"] for j in (await listed(api, user))["items"]] == ["queued"]
            api.update_job(job_id, status=JobStatus.FAILED, error="boom")  # as the worker would, not through the API
            deadline = time.monotonic() + 10
            while (items := (await listed(api, user))["items"])[0]["status"] == "queued":
                assert time.monotonic() < deadline, "the kept page never aged out"
                await anyio.sleep(0.05)
            assert items[0]["status"] == "failed" and items[0]["error"] == "boom"

    async def test_within_its_life_a_page_is_answered_again_without_the_database(
            self, api_factory: ApiFactory) -> None:
        async with api_factory(api_list_cache_seconds=60) as api:
            user = api.new_user()
            job_id = await submit(api, user)
            first = await listed(api, user)
            api.update_job(job_id, step=7)  # not through the API: nothing empties the cache
            again = await listed(api, user)
            assert again == first and again["items"][0]["step"] == 0
            assert (await api.client.get(f"/v1/jobs/{job_id}", headers=user)).json()["step"] == 7  # never kept
            other_filters = await listed(api, user, status="queued")  # another page: read afresh
            assert other_filters["items"][0]["step"] == 7

    async def test_a_write_through_this_process_is_seen_by_the_next_list(self, api_factory: ApiFactory) -> None:
        async with api_factory(api_list_cache_seconds=60) as api:
            user = api.new_user()
            first_id = await submit(api, user)
            assert (await listed(api, user))["total"] == 1
            second_id = await submit(api, user)
            page = await listed(api, user)
            assert page["total"] == 2 and [j["id"] for j in page["items"]] == [second_id, first_id]
            assert (await api.client.post(f"/v1/jobs/{first_id}/cancel", headers=user)).status_code == 200
            statuses = {j["id"]: j["status"] for j in (await listed(api, user))["items"]}
            assert statuses == {first_id: "cancelled", second_id: "queued"}

    async def test_a_write_refused_for_want_of_a_key_leaves_the_pages_kept(self, api_factory: ApiFactory) -> None:
        async with api_factory(api_list_cache_seconds=60) as api:
            user = api.new_user()
            job_id = await submit(api, user)
            first = await listed(api, user)
            api.update_job(job_id, step=7)  # not through the API: only an emptied cache would show it
            for headers in ({}, {"Authorization": "Bearer nn_not-a-key"}):
                refused = await api.client.post("/v1/jobs", json=SPEC, headers=headers)
                assert refused.status_code == 401
            assert await listed(api, user) == first
            # An authenticated write, even one refused, still empties them.
            assert (await api.client.post("/v1/jobs", json={}, headers=user)).status_code == 422
            assert (await listed(api, user))["items"][0]["step"] == 7

    async def test_each_owner_has_pages_of_their_own(self, api_factory: ApiFactory) -> None:
        async with api_factory(api_list_cache_seconds=60) as api:
            alice, bob = api.new_user("alice"), api.new_user("bob")
            alice_job = await submit(api, alice)
            assert [j["id"] for j in (await listed(api, alice))["items"]] == [alice_job]
            assert (await listed(api, bob)) == {"items": [], "total": 0, "limit": 50, "offset": 0}

    async def test_a_running_jobs_eta_is_computed_when_the_kept_page_is_answered(
            self, api_factory: ApiFactory) -> None:
        async with api_factory(api_list_cache_seconds=60) as api:
            user = api.new_user()
            job_id = await submit(api, user)
            api.update_job(job_id, status=JobStatus.RUNNING, step=2, started_at=utcnow() - timedelta(seconds=100))
            first = (await listed(api, user))["items"][0]
            await anyio.sleep(0.05)
            again = (await listed(api, user))["items"][0]
            assert first["step"] == again["step"] == 2  # the kept row...
            # ...and its ETA from now: 8 steps left at (elapsed / 2) s a step, and more has elapsed.
            assert again["eta_seconds"] > first["eta_seconds"] >= 400

    async def test_a_kept_page_answers_the_bytes_a_fresh_read_answers(self, api_factory: ApiFactory) -> None:
        async with api_factory(api_list_cache_seconds=60) as kept, api_factory(api_list_cache_seconds=0) as fresh:
            user = kept.new_user()
            await submit(kept, user)
            failed = await submit(kept, user)
            kept.update_job(failed, status=JobStatus.FAILED, error="boom", final_metrics={"train_loss": 0.5})
            answers = [await kept.client.get("/v1/jobs", headers=user) for _ in range(2)]
            answers.append(await fresh.client.get("/v1/jobs", headers=user))  # read and serialized by FastAPI
            assert [a.status_code for a in answers] == [200, 200, 200]
            assert answers[0].content == answers[1].content == answers[2].content
            assert answers[1].headers["content-type"] == answers[2].headers["content-type"] == "application/json"
            assert answers[1].headers["x-content-type-options"] == "nosniff"  # the same headers on a kept page

    async def test_with_zero_seconds_every_list_reads_the_database(self, api_factory: ApiFactory) -> None:
        async with api_factory(api_list_cache_seconds=0) as api:
            user = api.new_user()
            job_id = await submit(api, user)
            await listed(api, user)
            api.update_job(job_id, step=3)
            assert (await listed(api, user))["items"][0]["step"] == 3
            assert len(api.runtime.pages) == 0
