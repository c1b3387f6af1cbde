"""What one API process holds of PostgreSQL's connections, as the database sees them (pg_stat_activity, by
application_name): each of its three pools is named, a burst of new clients submitting, polling and listing at once
stays within the budget README gives (Configuration, "Connections to PostgreSQL"), and a shutdown closes them all."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from api.grouping import MAX_IN_FLIGHT
from tests.api.conftest import SPEC, ApiFactory
from tests.service_guard import connections_by_name

pytestmark = [pytest.mark.anyio, pytest.mark.service]
CONCURRENCY = 4  # NARROWNET_API_DB_CONCURRENCY, low so that 40 clients press on every bound
CLIENTS = 40
NAMES = {"narrownet-api", "narrownet-api-reads", "narrownet-api-writes"}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_burst_of_new_clients_stays_within_the_connection_budget_and_a_shutdown_closes_every_one(
        api_factory: ApiFactory, database_url: str) -> None:
    peak: Counter[str] = Counter()
    async with api_factory(api_db_concurrency=CONCURRENCY) as api:
        # One key per client, none looked up yet: every first request misses the key cache at once.
        users = [api.new_user(f"user-{i}") for i in range(CLIENTS)]
        done = asyncio.Event()

        def note(counts: Counter[str]) -> None:
            for name, count in counts.items():
                peak[name] = max(peak[name], count)

        async def watch() -> None:
            while not done.is_set():
                note(await asyncio.to_thread(connections_by_name, database_url))
                await asyncio.sleep(0.005)

        async def client(user: dict[str, str], i: int) -> None:
            for round_ in range(3):
                created = await api.client.post("/v1/jobs", json={**SPEC, "name": f"c{i}-{round_}"}, headers=user)
                assert created.status_code == 201, created.text
                polled = await api.client.get(f"/v1/jobs/{created.json()['id']}", headers=user)
                assert polled.status_code == 200, polled.text
                listed = await api.client.get("/v1/jobs?limit=5", headers=user)
                assert listed.status_code == 200, listed.text

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(client(user, i) for i, user in enumerate(users)))
        done.set()
        await watcher
        note(connections_by_name(database_url))  # and what the pools keep once it is over
        assert set(peak) == NAMES, peak  # every connection says which pool it is
        assert peak["narrownet-api-reads"] <= CONCURRENCY, peak  # polls and pages: one per turn at the database
        assert peak["narrownet-api-writes"] <= min(CONCURRENCY, MAX_IN_FLIGHT), peak  # a group per connection
        assert peak.total() <= 2 * CONCURRENCY + 28, peak  # README's budget
    # A backend leaves pg_stat_activity a moment after its client closed the socket.
    deadline = asyncio.get_running_loop().time() + 10
    while NAMES & set(left := connections_by_name(database_url)):
        assert asyncio.get_running_loop().time() < deadline, f"the API left connections open: {left}"
        await asyncio.sleep(0.05)
