"""Health, readiness, Prometheus metrics, body caps and the error shape for framework-level errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from api.app import create_app
from tests.api.conftest import SPEC, Api, ApiFactory, make_settings

pytestmark = pytest.mark.anyio


class TestProbes:
    async def test_healthz(self, api: Api) -> None:
        response = await api.client.get("/healthz")
        assert response.status_code == 200 and response.json() == {"status": "ok"}

    async def test_readyz(self, api: Api) -> None:
        response = await api.client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok", "artifacts": "ok"}}

    async def test_readyz_names_a_broker_that_is_down(self, api_factory: ApiFactory) -> None:
        # Nothing listens on port 1: a real refused connection, not a stand-in.
        async with api_factory(broker_url="redis://127.0.0.1:1/0") as api:
            response = await api.client.get("/readyz")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "not_ready"
        assert error["message"] == "not ready: broker unreachable"  # what is down; not where (no host, port)


def test_readyz_and_requests_answer_503_when_the_database_is_down(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import anyio

    async def run() -> None:
        settings = make_settings(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/narrownet")
        app = create_app(settings)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                ready = await client.get("/readyz")
                assert ready.status_code == 503
                assert ready.json()["error"]["message"] == "not ready: database unreachable"
                assert "127.0.0.1" not in ready.text and "postgres" not in ready.text
                # Any route that needs the database: a clear 503, never a 500.
                response = await client.get("/v1/jobs", headers={"Authorization": "Bearer nn_whatever"})
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "database_unavailable"
                assert response.headers["retry-after"]
        finally:
            app.state.runtime.close()

    anyio.run(run)


class TestPrometheus:
    async def test_counts_by_route_template_and_jobs_submitted(self, api: Api) -> None:
        user = api.new_user()
        job_ids = [(await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"] for _ in range(2)]
        for job_id in job_ids:
            await api.client.get(f"/v1/jobs/{job_id}", headers=user)
        await api.client.get("/v1/jobs/nope", headers=user)

        response = await api.client.get("/metrics", headers=user)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert 'narrownet_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"} 2.0' in text
        assert 'narrownet_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 1.0' in text
        assert 'narrownet_http_requests_total{method="POST",route="/v1/jobs",status="201"} 2.0' in text
        assert 'narrownet_jobs_submitted_total{queue="cpu"} 2.0' in text
        assert 'narrownet_http_request_duration_seconds_count{method="GET",route="/v1/jobs/{job_id}"} 3.0' in text
        assert job_ids[0] not in text  # raw paths never become labels

    async def test_metrics_needs_a_key(self, api: Api) -> None:
        assert (await api.client.get("/metrics")).status_code == 401


class TestBodyCaps:
    async def test_declared_length_over_the_cap(self, api_factory: ApiFactory) -> None:
        async with api_factory(max_request_bytes=2048) as api:
            response = await api.client.post("/v1/jobs", content=b"{" + b" " * 4096 + b"}", headers={
                **api.new_user(), "Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"

    async def test_streamed_body_over_the_cap_without_a_length(self, api_factory: ApiFactory) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"name": "'
            for _ in range(8):
                yield b"x" * 1024
            yield b'"}'

        async with api_factory(max_request_bytes=2048) as api:
            response = await api.client.post("/v1/jobs", content=chunks(), headers={
                **api.new_user(), "Content-Type": "application/json"})
        assert "content-length" not in response.request.headers
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"


class TestErrorShape:
    async def test_unknown_route_and_method(self, api: Api) -> None:
        missing = await api.client.get("/v2/jobs")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        wrong = await api.client.delete("/v1/jobs", headers=api.new_user())
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"

    async def test_openapi_documents_the_api(self, api: Api) -> None:
        user = api.new_user()
        schema = (await api.client.get("/openapi.json", headers=user)).json()
        assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/metrics", "/v1/jobs/{job_id}/cancel",
                "/v1/jobs/{job_id}/checkpoint", "/v1/jobs/{job_id}/checkpoint/meta", "/v1/datasets",
                "/v1/datasets/{dataset_id}", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
        assert "JobSpec" in schema["components"]["schemas"]
        assert (await api.client.get("/docs", headers=user)).status_code == 200
