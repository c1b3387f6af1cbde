"""A request's trips to a worker thread: each costs a handoff and GIL contention under load (bench/RESULTS.md,
"Second cut"), so the hot paths keep to one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anyio.to_thread
import pytest

from api.services.key_revocations import RedisMark
from tests.api.conftest import SPEC, Api
from tests.service_guard import REDIS_HOST, REDIS_PORT, redis_database

pytestmark = pytest.mark.anyio


@pytest.fixture
def api(api: Api) -> Iterator[Api]:
    """The app as deployed: PostgreSQL goes with Redis, where the key revocation mark lives (SQLite: a file)."""
    if api.runtime.revocations is None:
        with redis_database() as db:
            api.runtime.revocations = RedisMark(f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}")
            yield api
    else:
        yield api


@pytest.fixture
def thread_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the functions sent to a worker thread (the call still happens, as before)."""
    trips: list[str] = []
    real = anyio.to_thread.run_sync

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(func, "__qualname__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    yield trips


def read_trips(api: Api) -> int:
    """Trips a status poll or a plain submission costs: none on PostgreSQL (the asyncio engines), one on SQLite."""
    return 0 if api.runtime.engine.dialect.name == "postgresql" else 1


async def test_once_the_key_is_cached_a_write_takes_at_most_one_trip_and_a_status_poll_too(
        api: Api, thread_trips: list[str]) -> None:
    user = api.new_user()
    job_id = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]  # the key is now cached
    for method, path, body, trips in (("GET", f"/v1/jobs/{job_id}", None, read_trips(api)),
                                      ("POST", "/v1/jobs", SPEC, read_trips(api)),
                                      ("GET", "/v1/jobs", None, read_trips(api)),
                                      ("POST", f"/v1/jobs/{job_id}/cancel", None, 1)):
        thread_trips.clear()
        response = await api.client.request(method, path, json=body, headers=user)
        assert response.status_code in (200, 201), (path, response.text)
        assert len(thread_trips) == trips, (method, path, thread_trips)


async def test_on_postgres_a_plain_submission_takes_no_trip_to_a_worker_thread(
        api: Api, thread_trips: list[str]) -> None:
    """Its transaction runs on the event loop (api/services/job_writes.py), and the sender's own thread sends it
    (api/sender.py). On SQLite the whole submission is one trip (the jobs service on a session of its own)."""
    user = api.new_user()
    await api.client.post("/v1/jobs", json=SPEC, headers=user)  # the key is now cached
    thread_trips.clear()
    assert (await api.client.post("/v1/jobs", json=SPEC, headers=user)).status_code == 201
    postgres = api.runtime.engine.dialect.name == "postgresql"
    assert thread_trips == ([] if postgres else ["in_transaction.<locals>.run"])
    assert len(api.drain_queue("cpu")) == 2


async def test_a_key_not_yet_cached_costs_one_more_trip_for_its_lookup(api: Api, thread_trips: list[str]) -> None:
    user = api.new_user()
    assert (await api.client.get("/v1/jobs", headers=user)).status_code == 200
    assert len(thread_trips) == 1 + read_trips(api), thread_trips  # the key's lookup, then the read
    thread_trips.clear()
    # Another page: the one above is kept for a moment and would cost no trip at all (api/services/page_cache.py).
    assert (await api.client.get("/v1/jobs", params={"limit": 10}, headers=user)).status_code == 200
    assert len(thread_trips) == read_trips(api), thread_trips
    thread_trips.clear()
    assert (await api.client.get("/v1/jobs", headers=user)).status_code == 200
    assert thread_trips == [], thread_trips


async def test_an_endpoint_that_fails_commits_nothing_and_sends_nothing(api: Api) -> None:
    user = api.new_user()
    before = len(api.drain_queue("cpu"))
    response = await api.client.post("/v1/jobs", json={**SPEC, "model": {"arch": "shallow", "width": 3}},
                                     headers=user)
    assert response.status_code == 422
    assert (await api.client.get("/v1/jobs", headers=user)).json()["total"] == 0
    assert len(api.drain_queue("cpu")) == before == 0


async def test_a_request_without_credentials_is_refused_without_a_trip(api: Api, thread_trips: list[str]) -> None:
    response = await api.client.get("/v1/jobs")
    assert response.status_code == 401 and "missing credentials" in response.text
    assert thread_trips == []
