"""Requests that arrive together: on PostgreSQL, submissions are committed together and status polls read together
(api/grouping.py), and each still gets the answer it would get alone. On SQLite each goes on its own."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import select

from api.app import create_app
from core.db.models import ApiKey
from tests.api.conftest import SPEC, Api, ApiFactory, make_settings

pytestmark = pytest.mark.anyio
CAP, EACH = 3, 8


def groups_observed(metrics: str, histogram: str = "narrownet_submissions_per_transaction") -> tuple[float, float]:
    """(groups, requests in them) from one of the grouping histograms."""
    count = re.search(rf"^{histogram}_count (\S+)$", metrics, re.M)
    total = re.search(rf"^{histogram}_sum (\S+)$", metrics, re.M)
    assert count is not None and total is not None, metrics
    return float(count.group(1)), float(total.group(1))


async def test_submissions_arriving_together_each_get_their_own_answer_and_the_cap_holds_per_owner(
        api_factory: ApiFactory) -> None:
    async with api_factory(max_queued_jobs_per_user=CAP) as api:
        users = [api.new_user("first"), api.new_user("second")]
        for user in users:  # keys looked up and cached before the submissions leave together
            assert (await api.client.get("/v1/jobs", headers=user)).status_code == 200
        answers = await asyncio.gather(*(
            api.client.post("/v1/jobs", json={**SPEC, "name": f"together-{i}"}, headers=users[i % 2])
            for i in range(2 * EACH)))
        created = [a for a in answers if a.status_code == 201]
        refused = [a for a in answers if a.status_code != 201]
        assert len(created) == 2 * CAP, [a.text for a in answers]
        assert {a.status_code for a in refused} == {429}
        assert {a.json()["error"]["code"] for a in refused} == {"too_many_queued_jobs"}
        # Each owner's created jobs are its own and within its cap.
        owners = Counter(i % 2 for i, a in enumerate(answers) if a.status_code == 201)
        assert owners == {0: CAP, 1: CAP}
        for i, answer in enumerate(answers):
            if answer.status_code == 201:
                seen = await api.client.get(f"/v1/jobs/{answer.json()['id']}", headers=users[i % 2])
                assert seen.status_code == 200 and seen.json()["name"] == f"together-{i}"
        # Every created job was sent to the broker, once.
        sent = [message.headers["argsrepr"] for message in api.drain_queue("cpu")]
        assert sorted(sent) == sorted(f"['{a.json()['id']}']" for a in created)
        metrics = (await api.client.get("/metrics", headers=users[0])).text
        transactions, submissions = groups_observed(metrics)
        if api.runtime.engine.dialect.name == "postgresql":
            # Every submission went through a group commit, and some shared a transaction.
            assert submissions == 2 * EACH and transactions < submissions
        else:
            assert (transactions, submissions) == (0, 0)  # SQLite: the jobs service, one submission at a time


async def test_a_group_with_a_used_idempotency_key_answers_the_replay_and_creates_the_rest(api: Api) -> None:
    user = api.new_user()
    first = await api.client.post("/v1/jobs", json=SPEC, headers={**user, "Idempotency-Key": "k-1"})
    assert first.status_code == 201
    answers = await asyncio.gather(
        api.client.post("/v1/jobs", json=SPEC, headers={**user, "Idempotency-Key": "k-1"}),
        *(api.client.post("/v1/jobs", json={**SPEC, "name": f"n-{i}"}, headers=user) for i in range(4)),
        api.client.post("/v1/jobs", json=SPEC, headers={**user, "Idempotency-Key": "k-2"}),
        api.client.post("/v1/jobs", json=SPEC, headers={**user, "Idempotency-Key": "k-2"}))
    replay, *fresh, second, again = answers
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert [a.status_code for a in fresh] == [201] * 4
    # Two submissions of a new key in one group: one creates it, the other replays it.
    assert sorted([second.status_code, again.status_code]) == [200, 201]
    assert second.json()["id"] == again.json()["id"]
    listed = (await api.client.get("/v1/jobs", headers=user)).json()
    assert listed["total"] == 6


@asynccontextmanager
async def postgres_api(home: Path, url: str, **overrides: Any) -> AsyncIterator[Api]:
    app = create_app(make_settings(home, url, **overrides))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            yield Api(app=app, client=client)
    finally:
        await app.state.runtime.aclose()
        app.state.runtime.close()


@asynccontextmanager
async def owner_lock_held(api: Api, url: str, name: str) -> AsyncIterator[None]:
    """The queue lock of the key named `name`, held by a transaction of another connection until the block ends."""
    with api.session() as session:
        owner = session.scalars(select(ApiKey.id).where(ApiKey.name == name)
                                .order_by(ApiKey.created_at.desc())).first()
    assert owner is not None
    blocker = await psycopg.AsyncConnection.connect(url.replace("+psycopg", ""))
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT id FROM api_keys WHERE id = %s FOR NO KEY UPDATE", (owner,))
        yield
    finally:
        await blocker.execute("ROLLBACK")
        await blocker.close()


async def keys_cached(api: Api, *users: dict[str, str]) -> None:
    for user in users:
        assert (await api.client.get("/v1/jobs", headers=user)).status_code == 200


@pytest.mark.service
async def test_an_owner_whose_lock_is_held_elsewhere_gets_503_and_the_others_in_its_group_are_created(
        tmp_path: Path, postgres_database_url: str) -> None:
    """A group waits for each of its owners' locks. Owner A's lock is held by another transaction past the lock
    timeout: the group fails on it and is written one by one, so only A's submission gets 503 database_busy."""
    async with postgres_api(tmp_path, postgres_database_url, database_busy_timeout_seconds=0.5) as api:
        held, free = api.new_user("held"), api.new_user("free")
        await keys_cached(api, held, free)
        async with owner_lock_held(api, postgres_database_url, "held"):
            answers = await asyncio.gather(*(
                api.client.post("/v1/jobs", json=SPEC, headers=user) for user in (free, held, free, free)))
        assert [a.status_code for a in answers] == [201, 503, 201, 201], [a.text for a in answers]
        assert answers[1].json()["error"]["code"] == "database_busy"
        transactions, submissions = groups_observed((await api.client.get("/metrics", headers=free)).text)
        assert submissions > transactions  # some submissions shared a group
        assert (await api.client.post("/v1/jobs", json=SPEC, headers=held)).status_code == 201  # released


@pytest.mark.service
async def test_a_submission_waiting_for_a_held_lock_does_not_hold_back_the_ones_after_it(
        tmp_path: Path, postgres_database_url: str) -> None:
    """Its group stalls; the next group starts beside it (api/grouping.py STALL_SECONDS) instead of waiting up to
    the lock timeout (5 s here) behind it."""
    async with postgres_api(tmp_path, postgres_database_url, database_busy_timeout_seconds=5) as api:
        held, free = api.new_user("held"), api.new_user("free")
        await keys_cached(api, held, free)
        async with owner_lock_held(api, postgres_database_url, "held"):
            stuck = asyncio.ensure_future(api.client.post("/v1/jobs", json=SPEC, headers=held))
            await asyncio.sleep(0.2)  # its group is in flight, waiting for the lock
            later = await asyncio.wait_for(api.client.post("/v1/jobs", json=SPEC, headers=free), timeout=4)
            assert later.status_code == 201, later.text
            assert not stuck.done()
        assert (await stuck).status_code == 201  # created once the lock was let go
        listed = (await api.client.get("/v1/jobs", headers=held)).json()
        assert listed["total"] == 1


async def test_status_polls_arriving_together_each_see_their_own_job_and_nobody_elses(api: Api) -> None:
    users = [api.new_user("first"), api.new_user("second")]
    mine = [[(await api.client.post("/v1/jobs", json={**SPEC, "name": f"u{u}-{i}"}, headers=users[u])).json()["id"]
             for i in range(3)] for u in range(2)]
    polls = [(u, job_id) for u in range(2) for job_id in mine[u]]  # each their own
    polls += [(0, mine[1][0]), (1, mine[0][1])]  # the other user's job: as absent as one that never was
    polls += [(0, "0" * 32), (1, mine[1][2]), (0, mine[0][0])]  # an unknown id; the same job polled twice
    answers = await asyncio.gather(*(api.client.get(f"/v1/jobs/{job_id}", headers=users[u]) for u, job_id in polls))
    for (u, job_id), answer in zip(polls, answers, strict=True):
        if job_id in mine[u]:
            assert answer.status_code == 200 and answer.json()["id"] == job_id, answer.text
            assert answer.json()["name"] == f"u{u}-{mine[u].index(job_id)}"
        else:
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", answer.text
    reads, polled = groups_observed((await api.client.get("/metrics", headers=users[0])).text,
                                    "narrownet_job_polls_per_read")
    if api.runtime.engine.dialect.name == "postgresql":
        assert polled == len(polls) and reads < polled  # some polls shared a read
    else:
        assert (reads, polled) == (0, 0)


async def test_a_poll_sees_a_cancel_that_committed_before_it_was_asked(api: Api) -> None:
    """A poll that arrives while a read is in flight waits for the next one: it never gets an answer read before
    it asked."""
    user = api.new_user()
    job_ids = [(await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"] for _ in range(4)]

    async def poll_then_cancel_then_poll(job_id: str) -> str:
        await api.client.get(f"/v1/jobs/{job_id}", headers=user)
        assert (await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=user)).status_code == 200
        return str((await api.client.get(f"/v1/jobs/{job_id}", headers=user)).json()["status"])

    background = [asyncio.ensure_future(api.client.get(f"/v1/jobs/{job_ids[0]}", headers=user)) for _ in range(20)]
    assert await asyncio.gather(*(poll_then_cancel_then_poll(job_id) for job_id in job_ids)) == ["cancelled"] * 4
    await asyncio.gather(*background)
