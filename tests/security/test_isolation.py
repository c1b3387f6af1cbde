"""Promise 9: every route needs a key (or the dashboard's session) except the health probes, the API's own
description and the dashboard's sign-in page and static files, which hold no user data; every dashboard page
without a session redirects to sign-in; one user's jobs, metrics, checkpoints and datasets are invisible to
another (404); keys are stored hashed; per-key rate limit and a cap on queued jobs (429).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import inspect, select, text
from starlette.routing import Mount

from core.db.models import JobStatus
from tests.security.conftest import SPEC, Api, ApiFactory, User, make_user

pytestmark = pytest.mark.anyio

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json"), ("GET", "/docs"),
          ("GET", "/ui/login")}
# Public, but they need a body: the sign-in form itself (a missing key is a 422, a wrong one a 401).
SIGN_IN = {("POST", "/ui/login")}
# Dashboard pages: without a session they redirect to the sign-in page (never show data); `/` too.
PAGES = {("GET", "/"), ("GET", "/ui/jobs"), ("GET", "/ui/jobs/{job_id}"), ("GET", "/ui/compare"),
         ("GET", "/ui/sweeps"), ("GET", "/ui/sweeps/{sweep_id}"), ("POST", "/ui/logout")}
STATIC = "/static"  # the vendored scripts and styles (a Mount), checked below


def served_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path template) of every route the app answers, however the routers were included."""
    for route in app.routes:
        if isinstance(route, Mount):
            assert route.path == STATIC, f"{route.path}: a mount; decide how it is protected and test it"
            continue
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for context in contexts:
            original = getattr(context, "original_route", context)
            methods = getattr(original, "methods", None)
            assert methods, f"{context!r} is not a plain HTTP route; decide how it is protected and test it"
            for method in sorted(methods - {"HEAD"}):
                yield method, context.path


class TestKeyRequired:
    async def test_every_route_but_the_public_ones_needs_a_key_or_a_session(self, api: Api) -> None:
        routes = sorted(set(served_routes(api.app)))
        assert len(routes) >= 20 and PUBLIC | SIGN_IN | PAGES <= set(routes)
        forged_cookie = {"Cookie": "narrownet_session=eyJrIjoiMCJ9.forged.signature"}
        for method, template in routes:
            path = re.sub(r"\{[^}]+\}", "0" * 32, template)
            for headers in ({}, {"Authorization": "Bearer nn_wrong"}, {"Authorization": "Basic YTpi"}, forged_cookie):
                response = await api.client.request(method, path, headers=headers)
                where = (method, path, headers, response.status_code)
                if (method, template) in PUBLIC:
                    assert response.status_code == 200, where
                elif (method, template) in SIGN_IN:
                    assert response.status_code == 422, where
                elif (method, template) in PAGES:
                    assert response.status_code == 303, where
                    assert response.headers["location"].startswith("/ui/login"), where
                else:
                    assert response.status_code == 401, where
                    assert response.json()["error"]["code"] == "unauthorized"

    async def test_static_files_hold_no_user_data_and_stay_inside_their_folder(self, api: Api, alice: User) -> None:
        assert (await api.client.get("/static/app.css")).status_code == 200
        for path in ("/static/../api/app.py", "/static/%2e%2e/deps.py", "/static/..%2fpages.py", "/static/"):
            response = await api.client.get(path)
            assert response.status_code == 404, path
        # The public pages name nothing of a user's.
        for path in ("/docs", "/openapi.json", "/ui/login"):
            text = (await api.client.get(path)).text
            assert not any(secret in text for secret in alice.secrets), path

    async def test_schema_and_docs_need_no_key(self, api: Api) -> None:
        schema = await api.client.get("/openapi.json")
        assert schema.status_code == 200 and "/v1/jobs/{job_id}/events" in schema.json()["paths"]
        docs = await api.client.get("/docs")
        assert docs.status_code == 200 and "/static/vendor/swagger-ui-dist-" in docs.text


class TestUsersAreIsolated:
    async def test_another_users_things_are_404_and_absent_from_lists(self, api: Api, alice: User,
                                                                      bob: User) -> None:
        for method, path in (("GET", f"/v1/jobs/{bob.job_id}"), ("GET", f"/v1/jobs/{bob.job_id}/metrics"),
                             ("POST", f"/v1/jobs/{bob.job_id}/cancel"),
                             ("GET", f"/v1/jobs/{bob.job_id}/checkpoint"),
                             ("GET", f"/v1/jobs/{bob.job_id}/checkpoint/meta"),
                             ("GET", f"/v1/datasets/{bob.dataset_id}"),
                             ("GET", f"/v1/sweeps/{bob.sweep_id}"), ("POST", f"/v1/sweeps/{bob.sweep_id}/cancel"),
                             ("GET", f"/v1/sweeps/{bob.sweep_id}/results"),
                             ("GET", f"/v1/sweeps/{bob.sweep_id}/summary"),
                             ("GET", f"/v1/sweeps/{bob.sweep_id}/heatmap.png")):
            response = await api.client.request(method, path, headers=alice.headers)
            assert response.status_code == 404, (method, path)
            assert not any(secret in response.text for secret in bob.secrets[3:]), response.text
            if method == "GET":  # ... while bob himself gets them
                assert (await api.client.get(path, headers=bob.headers)).status_code == 200, path

        for listing in ("/v1/jobs", "/v1/datasets", "/v1/jobs?status=queued", "/v1/jobs?name=bob-job", "/v1/sweeps",
                        f"/v1/jobs?sweep_id={bob.sweep_id}"):
            page = (await api.client.get(listing, headers=alice.headers)).json()
            assert not any(i in str(page) for i in bob.ids) and "bob-sweep" not in str(page), listing
        assert (await api.client.get("/v1/jobs?name=bob-job", headers=alice.headers)).json()["total"] == 0
        # Bob's dataset cannot be trained on with alice's key either.
        body = {**SPEC, "data": {"source": "dataset", "id": bob.dataset_id}}
        refused = await api.client.post("/v1/jobs", json=body, headers=alice.headers)
        assert refused.status_code == 422 and refused.json()["error"]["fields"][0]["field"] == "data.id"
        # Alice's cancel attempt changed nothing.
        assert (await api.client.get(f"/v1/jobs/{bob.job_id}", headers=bob.headers)).json()["status"] == "queued"

    async def test_an_idempotency_key_is_per_user(self, api: Api, alice: User, bob: User) -> None:
        # The same Idempotency-Key from two users makes two jobs: bob's key cannot replay (and so read) alice's.
        first = await api.client.post("/v1/jobs", json=SPEC, headers={**alice.headers, "Idempotency-Key": "k1"})
        second = await api.client.post("/v1/jobs", json=SPEC, headers={**bob.headers, "Idempotency-Key": "k1"})
        assert (first.status_code, second.status_code) == (201, 201)
        assert first.json()["id"] != second.json()["id"]


class TestKeysAreHashed:
    async def test_the_database_never_holds_a_plaintext_key(self, api: Api, alice: User, bob: User) -> None:
        with api.session() as s:
            dump = []
            for table in inspect(s.get_bind()).get_table_names():
                dump += [str(tuple(row)) for row in s.execute(text(f'SELECT * FROM "{table}"'))]
        everything = "\n".join(dump)
        assert alice.job_id in everything  # the dump does reach the rows
        for user in (alice, bob):
            secret = user.key.removeprefix("nn_")
            assert user.key not in everything and secret not in everything and secret[:16] not in everything
        # On SQLite, also the bytes on disk (database and journal), where deleted or old pages may linger.
        database = api.runtime.engine.url.database
        if api.runtime.engine.dialect.name == "sqlite" and database:
            for path in Path(database).parent.glob(Path(database).name + "*"):
                raw = path.read_bytes()
                assert alice.key.encode() not in raw and bob.key.encode() not in raw, path

    async def test_keys_are_looked_up_by_hash(self, api: Api, alice: User) -> None:
        from api.services.keys import hash_key
        from core.db.models import ApiKey

        with api.session() as s:
            stored = s.scalars(select(ApiKey.key_hash).where(ApiKey.key_hash == hash_key(alice.key))).all()
        assert len(stored) == 1 and re.fullmatch(r"[0-9a-f]{64}", stored[0])


class TestLimits:
    async def test_rate_limit_is_per_key_with_retry_after(self, api_factory: ApiFactory) -> None:
        async with api_factory(rate_limit_per_minute=5) as api:
            alice, bob = api.new_user("alice"), api.new_user("bob")
            codes = [(await api.client.get("/v1/jobs", headers=alice)).status_code for _ in range(6)]
            assert codes == [200] * 5 + [429]
            limited = await api.client.get(f"/v1/jobs/{'0' * 32}", headers=alice)  # every route counts
            assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(limited.headers["retry-after"]) <= 60
            assert (await api.client.get("/v1/jobs", headers=bob)).status_code == 200

    async def test_cap_on_queued_jobs_per_user(self, api_factory: ApiFactory) -> None:
        async with api_factory(max_queued_jobs_per_user=2) as api:
            alice, bob = await make_user(api, "alice"), api.new_user("bob")  # alice already has one queued job
            assert (await api.client.post("/v1/jobs", json=SPEC, headers=alice.headers)).status_code == 201
            over = await api.client.post("/v1/jobs", json=SPEC, headers=alice.headers)
            assert over.status_code == 429 and over.json()["error"]["code"] == "too_many_queued_jobs"
            assert (await api.client.post("/v1/jobs", json=SPEC, headers=bob)).status_code == 201  # per user
            api.update_job(alice.job_id, status=JobStatus.CANCELLED)
            assert (await api.client.post("/v1/jobs", json=SPEC, headers=alice.headers)).status_code == 201
