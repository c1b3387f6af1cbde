"""Dashboard pages, served by the app from the same services as the REST routes: each shows only the
signed-in user's jobs, carries the hooks the browser tests use, and every answer carries the CSP."""

from __future__ import annotations

import re

import pytest

from api.middleware import CONTENT_SECURITY_POLICY
from core.db.models import Checkpoint, JobStatus
from tests.api.conftest import SPEC, Api, spec
from tests.api.dashboard import browser, key_of, sign_in

pytestmark = pytest.mark.anyio


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-job-id="([0-9a-f]{32})"', html)


class TestPages:
    async def test_root_goes_to_jobs_when_signed_in_else_to_sign_in(self, api: Api) -> None:
        async with browser(api) as client:
            assert (await client.get("/")).headers["location"] == "/ui/login"
            await sign_in(client, key_of(api.new_user()))
            assert (await client.get("/")).headers["location"] == "/ui/jobs"

    async def test_the_jobs_page_lists_only_my_jobs_newest_first_filtered_and_paged(self, api: Api) -> None:
        alice, bob = api.new_user("alice"), api.new_user("bob")
        mine = [(await api.client.post("/v1/jobs", json=spec(name=f"a{i}", regime=regime), headers=alice)).json()["id"]
                for i, regime in enumerate(["regular", "constrained", "regular"])]
        theirs = (await api.client.post("/v1/jobs", json=spec(name="b0"), headers=bob)).json()["id"]
        api.update_job(mine[0], status=JobStatus.RUNNING, step=5, latest_metrics={"train_loss": 0.25})
        async with browser(api) as client:
            await sign_in(client, key_of(alice))
            page = (await client.get("/ui/jobs")).text
            assert row_ids(page) == mine[::-1] and theirs not in page
            assert "shallow m=4" in page and "0.25" in page and 'data-testid="loss-chart"' not in page
            assert row_ids((await client.get("/ui/jobs?regime=regular")).text) == [mine[2], mine[0]]
            assert row_ids((await client.get("/ui/jobs?status=running&regime=&name=")).text) == [mine[0]]
            assert row_ids((await client.get("/ui/jobs?name=a1")).text) == [mine[1]]
            assert row_ids((await client.get("/ui/jobs?name=b0")).text) == []
            assert row_ids((await client.get("/ui/jobs?offset=2")).text) == [mine[0]]
            assert (await client.get("/ui/jobs?status=bogus")).status_code == 422

    async def test_the_job_page_has_the_chart_cancel_and_checkpoint_hooks(self, api: Api) -> None:
        user = api.new_user()
        body = spec(name="m-r", constraint={"radius": 0.5}, optim={"name": "gd", "lr": 0.2, "iterations": 10})
        job_id = (await api.client.post("/v1/jobs", json=body, headers=user)).json()["id"]
        async with browser(api) as client:
            await sign_in(client, key_of(user))
            page = (await client.get(f"/ui/jobs/{job_id}")).text
            for hook in ('data-testid="loss-chart" data-points="0"', 'data-testid="cancel-job"', 'data-radius="0.5"',
                         "no checkpoint yet", "lr = 0.2", "&#34;iterations&#34;: 10"):
                assert hook in page, hook
            with api.session() as s:
                s.add(Checkpoint(job_id=job_id, step=7, attempt=1, sha256="ab" * 32, size_bytes=3,
                                 relpath=f"jobs/{job_id}/ckpt-000000007.safetensors"))
            page = (await client.get(f"/ui/jobs/{job_id}")).text
            assert f'href="/v1/jobs/{job_id}/checkpoint"' in page and "ab" * 32 in page

    async def test_another_users_job_is_absent_from_every_page(self, api: Api) -> None:
        alice, bob = api.new_user("alice"), api.new_user("bob")
        mine = (await api.client.post("/v1/jobs", json=SPEC, headers=alice)).json()["id"]
        theirs = (await api.client.post("/v1/jobs", json=SPEC, headers=bob)).json()["id"]
        async with browser(api) as client:
            await sign_in(client, key_of(alice))
            assert (await client.get(f"/ui/jobs/{theirs}")).status_code == 404
            for path in (f"/ui/compare?ids={mine},{theirs}", f"/ui/compare?ids={theirs}",
                         f"/v1/series?job_ids={mine},{theirs}", f"/v1/jobs/{theirs}/events"):
                response = await client.get(path)
                assert response.status_code == 404 and theirs in response.json()["error"]["message"], path

    async def test_the_compare_page_names_each_run(self, api: Api) -> None:
        user = api.new_user()
        ids = [(await api.client.post("/v1/jobs", json=spec(name=f"run{i}", regime=regime), headers=user)).json()["id"]
               for i, regime in enumerate(["regular", "constrained"])]
        async with browser(api) as client:
            await sign_in(client, key_of(user))
            page = await client.get(f"/ui/compare?ids={ids[0]}&ids={ids[1]}")
            assert page.status_code == 200 and row_ids(page.text) == ids
            assert 'data-testid="compare-chart"' in page.text and '"regime": "constrained"' in page.text
            assert (await client.get(f"/ui/compare?ids={ids[0]},{ids[1]}")).status_code == 200
            assert (await client.get("/ui/compare?ids=../x")).status_code == 422


class TestAssetsAndHeaders:
    async def test_every_answer_carries_the_csp_and_no_page_names_another_origin(self, api: Api) -> None:
        user = api.new_user()
        job_id = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
        async with browser(api) as client:
            await sign_in(client, key_of(user))
            for path in ("/ui/login", "/ui/jobs", f"/ui/jobs/{job_id}", f"/ui/compare?ids={job_id}", "/docs",
                         "/healthz", "/v1/jobs", "/static/app.css", "/nope"):
                response = await client.get(path)
                assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
                assert response.headers["x-content-type-options"] == "nosniff"
                if response.headers["content-type"].startswith("text/html"):
                    # Every src/href is a path of this service (or an inline data: URL).
                    for url in re.findall(r'(?:src|href)="([^"]*)"', response.text):
                        assert url.startswith(("/", "#", "data:")) and not url.startswith("//"), (path, url)
                    assert "<script>" not in response.text and " style=" not in response.text, path
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY

    async def test_the_pages_scripts_and_styles_are_served(self, api: Api) -> None:
        for path in ("/static/js/jobs.js", "/static/js/job.js", "/static/js/compare.js", "/static/js/chart.js",
                     "/static/js/docs.js", "/static/vendor/uplot-1.6.32/uPlot.iife.min.js",
                     "/static/vendor/swagger-ui-dist-5.35.0/swagger-ui-bundle.js"):
            response = await api.client.get(path)
            assert response.status_code == 200 and "javascript" in response.headers["content-type"], path
