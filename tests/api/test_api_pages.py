"""Dashboard pages, served by the app from the same services as the REST routes: each shows only the
signed-in user's jobs, carries the hooks the browser tests use, and every answer carries the CSP."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from api.middleware import CONTENT_SECURITY_POLICY
from api.services.sweep_tables import figure4_axes
from core.db.models import Checkpoint, JobStatus, utcnow
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


FIG4 = {"regime": ["regular", "constrained"], "model.width": [4, 8], "constraint.radius": [0.5, None],
        "optim.lr_hidden": [0.01, 0.1]}


async def submit_sweep(api: Api, user: dict[str, str], name: str, grid: dict[str, list[Any]]) -> dict[str, Any]:
    body = {"name": name, "base": {**SPEC, "optim": {"name": "gd", "lr": 0.1, "iterations": 10}}, "grid": grid}
    response = await api.client.post("/v1/sweeps", json=body, headers=user)
    assert response.status_code == 201, response.text
    return response.json()


def view_of(html: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="view">(.*?)</script>', html, re.S)
    assert found, "the page carries no view"
    return json.loads(found.group(1))


class TestSweepPages:
    async def test_the_sweeps_page_lists_only_my_sweeps_with_counts_progress_and_best(self, api: Api) -> None:
        alice, bob = api.new_user("alice"), api.new_user("bob")
        first = await submit_sweep(api, alice, "fig4-a", FIG4)
        second = await submit_sweep(api, alice, "seeds-a", {"seed": [1, 2]})
        theirs = await submit_sweep(api, bob, "fig4-b", FIG4)
        api.update_job(first["job_ids"][3], status=JobStatus.SUCCEEDED, step=10, finished_at=utcnow(),
                       final_metrics={"train_loss": 0.0125})
        async with browser(api) as client:
            await sign_in(client, key_of(alice))
            page = (await client.get("/ui/sweeps")).text
            assert re.findall(r'<tr data-sweep-id="([0-9a-f]{32})"', page) == [second["id"], first["id"]]
            assert theirs["id"] not in page and 'href="/ui/sweeps"' in page  # and the nav links here
            row = page[page.index(f'data-sweep-id="{first["id"]}"'):].split("</tr>")[0]
            for hook in ('data-count="succeeded" title="succeeded">1<', 'data-count="queued" title="queued">15<',
                         'data-field="best">0.0125<', "min train_loss", f'href="/ui/sweeps/{first["id"]}"',
                         "regime × model.width × constraint.radius × optim.lr_hidden", "<progress"):
                assert hook in row, hook

    async def test_the_sweep_page_opens_on_width_by_radius_a_panel_per_regime(self, api: Api) -> None:
        user = api.new_user()
        sweep = await submit_sweep(api, user, "fig4", FIG4)
        async with browser(api) as client:
            await sign_in(client, key_of(user))
            page = (await client.get(f"/ui/sweeps/{sweep['id']}")).text
            assert view_of(page) == {"sweep_id": sweep["id"], "axes": list(FIG4), "rows": "model.width",
                                     "cols": "constraint.radius", "split": "regime", "status": "queued",
                                     "objective": {"metric": "train_loss", "mode": "min"}}
            for hook in ('data-testid="sweep-heatmap"', '<select name="metric"', '<option value="w_dist">',
                         '<option value="jacobian_sigma_min">', f'href="/ui/jobs?sweep_id={sweep["id"]}"',
                         'data-testid="sweep-status" data-field="status">queued<', "/static/js/sweep.js"):
                assert hook in page, hook
            # Its jobs: the jobs page filtered by the sweep.
            listed = (await client.get(f"/ui/jobs?sweep_id={sweep['id']}")).text
            assert sorted(row_ids(listed)) == sorted(sweep["job_ids"]) and 'data-testid="sweep-link"' in listed
            other = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
            assert other in (await client.get("/ui/jobs")).text and other not in listed
            assert (await client.get("/ui/jobs?sweep_id=../x")).status_code == 422

    async def test_another_users_sweep_is_a_not_found_page(self, api: Api) -> None:
        alice, bob = api.new_user("alice"), api.new_user("bob")
        theirs = await submit_sweep(api, bob, "fig4-b", {"seed": [1, 2]})
        async with browser(api) as client:
            assert (await client.get(f"/ui/sweeps/{theirs['id']}")).headers["location"].startswith("/ui/login")
            assert (await client.get("/ui/sweeps")).headers["location"] == "/ui/login?next=%2Fui%2Fsweeps"
            await sign_in(client, key_of(alice))
            for sweep_id in (theirs["id"], "0" * 32, "not a sweep"):
                response = await client.get(f"/ui/sweeps/{sweep_id}")
                assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
                assert 'data-testid="not-found"' in response.text and "fig4-b" not in response.text
            assert theirs["job_ids"][0] not in (await client.get(f"/ui/jobs?sweep_id={theirs['id']}")).text

    def test_the_heatmap_opens_on_figure_4s_axes_where_the_grid_has_them(self) -> None:
        assert figure4_axes(list(FIG4)) == ("model.width", "constraint.radius", "regime")
        assert figure4_axes(["regime", "constraint.radius", "optim.lr_hidden"]) == (
            "optim.lr_hidden", "constraint.radius", "regime")
        assert figure4_axes(["seed", "model.width"]) == ("model.width", "seed", None)
        assert figure4_axes(["regime", "constraint.radius"]) == ("constraint.radius", None, "regime")
        assert figure4_axes(["regime"]) == ("regime", None, None)
        assert figure4_axes(["seed"]) == ("seed", None, None)


class TestAssetsAndHeaders:
    async def test_every_answer_carries_the_csp_and_no_page_names_another_origin(self, api: Api) -> None:
        user = api.new_user()
        job_id = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
        async with browser(api) as client:
            await sign_in(client, key_of(user))
            sweep_id = (await submit_sweep(api, user, "csp", {"seed": [1, 2]}))["id"]
            for path in ("/ui/login", "/ui/jobs", f"/ui/jobs/{job_id}", f"/ui/compare?ids={job_id}", "/docs",
                         "/ui/sweeps", f"/ui/sweeps/{sweep_id}",
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
                     "/static/js/sweeps.js", "/static/js/sweep.js", "/static/js/heatmap.js",
                     "/static/js/docs.js", "/static/vendor/uplot-1.6.32/uPlot.iife.min.js",
                     "/static/vendor/swagger-ui-dist-5.35.0/swagger-ui-bundle.js"):
            response = await api.client.get(path)
            assert response.status_code == 200 and "javascript" in response.headers["content-type"], path
