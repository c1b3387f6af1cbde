"""Bearer keys, per-user isolation (another user's ids are 404) and the per-key rate limit."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from api.ratelimit import RateLimiter
from api.services.key_revocations import FileMark, RedisMark, revocation_mark
from api.services.keys import revoke_key
from core.db.models import Checkpoint, MetricPoint
from core.repositories import keys as keys_repo
from core.settings import Settings
from narrownet.processes import free_port
from tests.api.conftest import SPEC, Api, ApiFactory
from tests.service_guard import REDIS_HOST, REDIS_PORT, redis_database

pytestmark = pytest.mark.anyio


class TestKeys:
    async def test_missing_key(self, api: Api) -> None:
        for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/datasets"),
                             ("GET", "/v1/jobs/abc/checkpoint"), ("GET", "/metrics")):
            response = await api.client.request(method, path, json=SPEC if method == "POST" else None)
            assert response.status_code == 401, path
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"

    async def test_wrong_key_and_wrong_scheme(self, api: Api) -> None:
        good = api.new_user()
        for header in ("Bearer nn_not-a-key", "Basic dXNlcjpwYXNz", good["Authorization"] + "x",
                       good["Authorization"].replace("Bearer ", "Token ")):
            response = await api.client.get("/v1/jobs", headers={"Authorization": header})
            assert response.status_code == 401, header
        assert (await api.client.get("/v1/jobs", headers=good)).status_code == 200

    async def test_revoked_key(self, api: Api) -> None:
        user = api.new_user()
        assert (await api.client.get("/v1/jobs", headers=user)).status_code == 200  # that page is now kept
        with api.session() as s:
            assert revoke_key(s, api.owner_id(user))
        # The key is checked before a kept page is looked for (api/services/page_cache.py).
        assert api.runtime.pages.enabled and len(api.runtime.pages) == 1
        assert (await api.client.get("/v1/jobs", headers=user)).status_code == 401

    async def test_a_key_revoked_in_the_api_process_is_refused_at_once_even_with_the_key_cache_on(
            self, api_factory: ApiFactory) -> None:
        async with api_factory(api_key_cache_seconds=60) as api:
            user = api.new_user()
            assert (await api.client.get("/v1/jobs", headers=user)).status_code == 200  # now cached
            with api.session() as s:
                assert revoke_key(s, api.owner_id(user))
            assert (await api.client.get("/v1/jobs", headers=user)).status_code == 401

    @pytest.mark.parametrize("where", ["file", pytest.param("redis", marks=pytest.mark.service)])
    async def test_a_key_revoked_by_another_process_is_refused_at_once_once_it_writes_the_revocation_mark(
            self, api_factory: ApiFactory, where: str) -> None:
        async with AsyncExitStack() as stack:
            api = await stack.enter_async_context(api_factory(api_key_cache_seconds=3600))
            if where == "redis":
                db = stack.enter_context(redis_database())
                api.runtime.revocations = RedisMark(f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}")
            elif api.runtime.revocations is None:  # PostgreSQL beside an SQLite broker: no file is shared
                api.runtime.revocations = FileMark(api.settings.home / "keys.revocation-mark")
            mark = api.runtime.revocations
            other_process_mark = RedisMark(mark.url) if isinstance(mark, RedisMark) else FileMark(mark.path)
            user = api.new_user()
            assert (await api.client.get("/v1/jobs", headers=user)).status_code == 200  # now cached in this app
            with api.session() as s:  # the revoke alone, as a process that could not write the mark
                assert keys_repo.revoke(s, api.owner_id(user))
            # The key really is cached: without a new mark this process still trusts it.
            assert (await api.client.get("/v1/jobs", headers=user)).status_code == 200
            other_process_mark.write()  # as `narrownet keys revoke` does once its revoke has committed
            assert (await api.client.get("/v1/jobs", headers=user)).status_code == 401
            await other_process_mark.aclose()

    async def test_without_a_shared_revocation_mark_no_key_is_cached(self, api_factory: ApiFactory) -> None:
        async with api_factory(api_key_cache_seconds=3600) as api:
            api.runtime.revocations = None  # what a database other than SQLite without Redis gets
            user = api.new_user()
            assert (await api.client.get("/v1/jobs", headers=user)).status_code == 200
            with api.session() as s:
                assert keys_repo.revoke(s, api.owner_id(user))
            assert (await api.client.get("/v1/jobs", headers=user)).status_code == 401

    async def test_an_unreadable_revocation_mark_trusts_no_cached_key(self, api_factory: ApiFactory) -> None:
        async with api_factory(api_key_cache_seconds=3600) as api:
            user = api.new_user()
            assert (await api.client.get("/v1/jobs", headers=user)).status_code == 200
            api.runtime.revocations = RedisMark(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
            with api.session() as s:
                assert keys_repo.revoke(s, api.owner_id(user))
            assert (await api.client.get("/v1/jobs", headers=user)).status_code == 401

    def test_the_embedded_default_keeps_its_mark_beside_the_sqlite_database(self, tmp_path: Path) -> None:
        mark = revocation_mark(Settings(home=tmp_path))
        assert isinstance(mark, FileMark) and mark.path.parent == tmp_path.resolve()
        redis_mark = revocation_mark(Settings(home=tmp_path, database_url="postgresql+psycopg://x@h/db",
                                              broker_url="redis://127.0.0.1:6379/3"))
        assert isinstance(redis_mark, RedisMark) and redis_mark.url.endswith("/3")
        assert revocation_mark(Settings(home=tmp_path, database_url="postgresql+psycopg://x@h/db",
                                        broker_url=f"sqla+sqlite:///{tmp_path / 'b.db'}")) is None

    async def test_health_needs_no_key(self, api: Api) -> None:
        assert (await api.client.get("/healthz")).status_code == 200
        assert (await api.client.get("/readyz")).status_code == 200


class TestIsolation:
    async def test_another_users_job_is_404_everywhere(self, api: Api) -> None:
        alice, bob = api.new_user("alice"), api.new_user("bob")
        job_id = (await api.client.post("/v1/jobs", json=SPEC, headers=alice)).json()["id"]
        with api.session() as s:  # give it something to leak: metrics and a checkpoint row
            s.add(MetricPoint(job_id=job_id, step=1, values={"train_loss": 1.0}, attempt=1))
            s.add(Checkpoint(job_id=job_id, step=1, attempt=1, sha256="0" * 64, size_bytes=1,
                             relpath=f"jobs/{job_id}/ckpt-000000001.safetensors"))

        for method, path in (("GET", ""), ("GET", "/metrics"), ("POST", "/cancel"), ("GET", "/checkpoint"),
                             ("GET", "/checkpoint/meta")):
            response = await api.client.request(method, f"/v1/jobs/{job_id}{path}", headers=bob)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"
        assert (await api.client.get("/v1/jobs", headers=bob)).json()["total"] == 0
        # Bob's cancel changed nothing.
        assert (await api.client.get(f"/v1/jobs/{job_id}", headers=alice)).json()["status"] == "queued"

    async def test_another_users_dataset_is_404_and_unusable(self, api: Api) -> None:
        import io

        import numpy as np

        alice, bob = api.new_user("alice"), api.new_user("bob")
        buffer = io.BytesIO()
        np.savez(buffer, X=np.ones((6, 3), dtype=np.float32), y=np.zeros(6, dtype=np.float32))
        upload = await api.client.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue())},
                                       headers=alice)
        assert upload.status_code == 201, upload.text
        dataset_id = upload.json()["id"]

        assert (await api.client.get(f"/v1/datasets/{dataset_id}", headers=bob)).status_code == 404
        assert (await api.client.get("/v1/datasets", headers=bob)).json()["total"] == 0
        body = {**SPEC, "data": {"source": "dataset", "id": dataset_id}}
        refused = await api.client.post("/v1/jobs", json=body, headers=bob)
        assert refused.status_code == 422
        assert refused.json()["error"]["fields"][0]["field"] == "data.id"
        assert (await api.client.post("/v1/jobs", json=body, headers=alice)).status_code == 201


class TestRateLimit:
    async def test_429_with_retry_after_per_key(self, api_factory: ApiFactory) -> None:
        async with api_factory(rate_limit_per_minute=3) as api:
            alice, bob = api.new_user(), api.new_user()
            codes = [(await api.client.get("/v1/jobs", headers=alice)).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            limited = await api.client.get("/v1/jobs", headers=alice)
            assert limited.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(limited.headers["retry-after"]) <= 60
            assert (await api.client.get("/v1/jobs", headers=bob)).status_code == 200  # per key

    def test_window_reopens(self) -> None:
        now = [1000.0]
        limiter = RateLimiter(2, window_seconds=60, clock=lambda: now[0])
        assert limiter.hit("k") is None and limiter.hit("k") is None
        assert limiter.hit("k") == pytest.approx(60.0)
        now[0] += 45
        assert limiter.hit("k") == pytest.approx(15.0)
        assert limiter.hit("other") is None
        now[0] += 15
        assert limiter.hit("k") is None
