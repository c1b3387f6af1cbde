"""The dashboard in a real browser (Chromium via Playwright) against a real `narrownet serve` (uvicorn, a Celery
worker, the reconciler): sign in with a key from `narrownet keys create`, watch jobs appear and change without a
reload, watch a curve grow, cancel, compare, read /docs offline; another user's job never shows; a page
without a session goes to sign-in; a forged cross-site POST is refused. No request may leave loopback.

The tests run in order on one server and one browser (a module), to keep the wall time small.
"""

from __future__ import annotations

import http.server
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from narrownet.client import NarrownetClient
from narrownet.processes import free_port, start_process, stop_gracefully, wait_http, wait_until
from tests.e2e.browser import Watch, chromium, new_context, require_chromium, screenshot_dir
from tests.e2e.conftest import STARTUP_SECONDS, VENV_BIN, clean_env

pytestmark = pytest.mark.slow

UI_TIMEOUT_MS = 30_000


def spec(name: str, regime: str, iterations: int, *, width: int = 16, radius: float | None = 1.0,
         lr: float = 0.1, every: int = 2) -> dict[str, Any]:
    return {"name": name, "regime": regime, "model": {"arch": "shallow", "width": width},
            "data": {"source": "synthetic", "n": 64, "d": 4}, "optim": {"name": "gd", "lr": lr,
                                                                         "iterations": iterations},
            "constraint": {"radius": radius}, "metrics_every": every, "checkpoint_every": 100}


# Figure 4 in small: 2 regimes x 3 widths x 3 radii, 18 shallow configs trained as packs in a few seconds.
SWEEP = {"name": "fig4-small", "objective": {"metric": "train_loss", "mode": "min"},
         "base": {**spec("fig4", "constrained", 1500, every=100), "checkpoint_every": 1500},
         "grid": {"regime": ["regular", "constrained"], "model.width": [8, 32, 128],
                  "constraint.radius": [0.1, 1.0, 10.0]}}


@dataclass
class Served:
    url: str
    home: Path
    alice: str
    bob: str

    def client(self, key: str) -> NarrownetClient:
        return NarrownetClient(self.url, key, timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_chromium()  # before the server starts: nothing to start without a browser
    home = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    env = clean_env(NARROWNET_HOME=str(home / "state"), NARROWNET_METRICS_FLUSH_EVERY="2")

    def key(name: str) -> str:
        out = subprocess.run([str(VENV_BIN / "narrownet"), "keys", "create", name], env=env, capture_output=True,
                             text=True, timeout=120, check=True)
        return out.stdout.strip().splitlines()[-1]

    process = start_process([str(VENV_BIN / "narrownet"), "serve", "--port", str(port)], env, home / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_http(f"{url}/readyz", process, STARTUP_SECONDS), (home / "serve.log").read_text()[-3000:]
        yield Served(url, home, key("alice"), key("bob"))
    finally:
        stop_gracefully(process, 20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def watch() -> Iterator[Watch]:
    watch = Watch()
    yield watch
    watch.assert_clean()


@pytest.fixture(scope="module")
def alice_page(browser: Any, watch: Watch) -> Iterator[Any]:
    context = new_context(browser, watch)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("shots"))


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url + "/ui/login")
    page.fill('input[name="api_key"]', key)
    page.click('[data-testid="sign-in"]')
    page.wait_for_url(re.compile(re.escape(url) + r"/ui/jobs"))


def points(page: Any, testid: str = "loss-chart") -> int:
    return int(page.get_attribute(f'[data-testid="{testid}"]', "data-points") or 0)


def row_status(page: Any, job_id: str) -> Any:
    return page.locator(f'tr[data-job-id="{job_id}"] [data-field="status"]')


def cells_shown(heatmap: Any) -> dict[str, str]:
    """The heatmap's cells as drawn: job id -> the number written in the cell."""
    return dict(heatmap.evaluate("el => [...el.querySelectorAll('a.cell[data-job-id]')].map("
                                 "a => [a.dataset.jobId, a.querySelector('text').textContent])"))


def cells_of(table: dict[str, Any]) -> dict[str, str]:
    """The summary's cells: job id -> its value as the page writes it (3 significant digits)."""
    def text(v: float) -> str:
        if abs(v) < 1e-2 or abs(v) >= 1e4:
            return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{v:.2e}")
        return f"{float(f'{v:.3g}'):g}"
    return {c["job_id"]: text(c["value"]) for p in table["panels"] for line in p["cells"] for c in line}


class TestDashboard:
    jobs: dict[str, str] = {}
    sweeps: dict[str, str] = {}

    def test_a_page_without_a_session_goes_to_sign_in(self, served: Served, alice_page: Any) -> None:
        for path in ("/", "/ui/jobs", f"/ui/jobs/{'0' * 32}", "/ui/compare?ids=x"):
            alice_page.goto(served.url + path)
            assert "/ui/login" in alice_page.url, path
        sign_in(alice_page, served.url, served.alice)
        assert alice_page.context.cookies()[0]["httpOnly"] is True
        assert alice_page.context.cookies()[0]["sameSite"] == "Strict"

    def test_a_submitted_job_appears_and_changes_status_without_reload(self, served: Served, alice_page: Any,
                                                                      shots: Path) -> None:
        from playwright.sync_api import expect

        alice_page.goto(served.url + "/ui/jobs")
        alice_page.evaluate("window.notReloaded = true")
        with served.client(served.alice) as client:
            regular = client.submit(spec("regular-m16", "regular", 1200, radius=None, every=8))["id"]
            # Long enough (a few seconds) that the row is seen unfinished before it changes.
            constrained = client.submit(spec("constrained-m16-r1", "constrained", 12_000, every=80))["id"]
        self.jobs.update(regular=regular, constrained=constrained)
        # The second job waits in the queue behind the first (one worker): its row shows up unfinished...
        expect(alice_page.locator(f'tr[data-job-id="{constrained}"]')).to_be_visible(timeout=UI_TIMEOUT_MS)
        assert row_status(alice_page, constrained).inner_text() in ("queued", "running")
        # ... and then changes, in place.
        expect(row_status(alice_page, constrained)).to_have_text("succeeded", timeout=90_000)
        expect(row_status(alice_page, regular)).to_have_text("succeeded")
        assert alice_page.evaluate("window.notReloaded") is True
        assert alice_page.locator("tbody tr").first.get_attribute("data-job-id") == constrained  # newest first

    def test_a_running_jobs_curve_grows_and_the_job_is_cancelled_from_the_page(
            self, served: Served, alice_page: Any, shots: Path) -> None:
        from playwright.sync_api import expect

        with served.client(served.alice) as client:
            long = client.submit(spec("long-constrained-m32", "constrained", 20_000, width=32, every=10))["id"]
            self.jobs["long"] = long
            client.submit(spec("short-regular-m8", "regular", 100, width=8, radius=None))
        alice_page.goto(f"{served.url}/ui/jobs/{long}")
        wait_until(lambda: points(alice_page) > 0, 60, "the first points on the loss chart", poll=0.2)
        first = points(alice_page)
        wait_until(lambda: points(alice_page) > max(first, 60), 90, "the loss chart to grow while the job runs",
                   poll=0.2)
        expect(alice_page.get_by_test_id("job-status")).to_have_text("running")
        alice_page.screenshot(path=str(shots / "dashboard-job.png"))
        jobs_page = alice_page.context.new_page()  # the list while a job runs, for the README
        jobs_page.goto(served.url + "/ui/jobs")
        expect(jobs_page.locator(f'tr[data-job-id="{long}"] [data-field="status"]')).to_have_text("running")
        jobs_page.screenshot(path=str(shots / "dashboard-jobs.png"))
        jobs_page.close()

        # Zoom (a drag on the chart) survives live updates, and lives in the URL.
        over = alice_page.locator('[data-testid="loss-chart"] .u-over')
        box = over.bounding_box()
        alice_page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + 40)
        alice_page.mouse.down()
        alice_page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 40, steps=5)
        alice_page.mouse.up()
        view = "JSON.parse(new URL(location.href).searchParams.get('loss') || '{}')"
        wait_until(lambda: alice_page.evaluate(view).get("x"), 10, "the zoom in the URL")
        zoomed = alice_page.evaluate(view)
        grown = points(alice_page)
        wait_until(lambda: points(alice_page) > grown, 60, "more points while zoomed", poll=0.2)
        assert alice_page.evaluate(view) == zoomed and points(alice_page) > grown

        with alice_page.expect_download() as download:  # PNG export of the live chart
            alice_page.locator('[data-testid="export-png"]').first.click()
        assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        alice_page.get_by_test_id("cancel-job").click()
        expect(alice_page.get_by_test_id("job-status")).to_have_text("cancelled", timeout=60_000)
        # The last checkpoint is kept; the page links it with its sha256.
        expect(alice_page.get_by_test_id("checkpoint-sha256")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
        with served.client(served.alice) as client:
            assert client.job(long)["status"] == "cancelled"
            sha = client.checkpoint_meta(long)["sha256"]
        assert alice_page.get_by_test_id("checkpoint-sha256").inner_text() == sha

    def test_two_jobs_compared_side_by_side(self, served: Served, alice_page: Any, shots: Path) -> None:
        from playwright.sync_api import expect

        alice_page.goto(served.url + "/ui/jobs")
        for name in ("regular", "constrained"):
            alice_page.locator(f'tr[data-job-id="{self.jobs[name]}"] input[name="ids"]').check()
        alice_page.get_by_test_id("compare-selected").click()
        alice_page.wait_for_url(re.compile(r"/ui/compare\?"))
        wait_until(lambda: points(alice_page, "compare-chart") > 0, 30, "the compared curves", poll=0.2)
        legend = alice_page.locator('[data-testid="compare-chart"] .u-legend').inner_text()
        assert "regular-m16" in legend and "constrained-m16-r1" in legend and "r=1" in legend
        alice_page.screenshot(path=str(shots / "dashboard-compare.png"))
        # The log-y toggle and a hidden series are view state: a reload keeps them.
        log = alice_page.locator('[data-testid="log-y"]')
        assert log.is_checked()
        log.uncheck()
        regular_entry = alice_page.locator(".u-legend .u-series", has_text="regular-m16 ")
        regular_entry.click()
        expect(regular_entry).to_have_class(re.compile("u-off"))
        alice_page.reload()
        wait_until(lambda: points(alice_page, "compare-chart") > 0, 30, "the curves after a reload", poll=0.2)
        expect(alice_page.locator('[data-testid="log-y"]')).not_to_be_checked()
        expect(alice_page.locator(".u-legend .u-series", has_text="regular-m16 ")).to_have_class(re.compile("u-off"))
        expect(alice_page.locator(".u-legend .u-series", has_text="constrained-m16-r1")).not_to_have_class(
            re.compile("u-off"))
        # CSV export is the full series.
        with alice_page.expect_download() as download:
            alice_page.get_by_test_id("export-csv").click()
        lines = Path(download.value.path()).read_text().splitlines()
        assert lines[0] == "job_id,name,step,train_loss" and len(lines) == 1 + 2 * 151

    def test_docs_render_their_operations_offline(self, served: Served, alice_page: Any) -> None:
        from playwright.sync_api import expect

        alice_page.goto(served.url + "/docs")
        expect(alice_page.locator(".opblock").first).to_be_visible(timeout=UI_TIMEOUT_MS)
        assert alice_page.locator(".opblock").count() >= 10
        assert alice_page.get_by_text("/v1/jobs/{job_id}/events").count() >= 1
        expect(alice_page.locator(".btn.authorize")).to_be_visible()

    def test_a_sweep_updates_live_and_its_heatmap_opens_the_best_job_of_a_cell(
            self, served: Served, alice_page: Any, shots: Path) -> None:
        from playwright.sync_api import expect

        alice_page.goto(served.url + "/ui/sweeps")
        alice_page.evaluate("window.notReloaded = true")
        with served.client(served.alice) as client:
            # The one worker is held by a long job, so the sweep is seen queued however fast it trains.
            blocker = client.submit(spec("sweep-blocker", "regular", 200_000, radius=None, every=1000))["id"]
            sweep = client.submit_sweep(SWEEP)
            self.sweeps["fig4"] = sweep["id"]
            # The row appears unfinished and then changes, in place.
            row = alice_page.locator(f'tr[data-sweep-id="{sweep["id"]}"]')
            expect(row).to_be_visible(timeout=UI_TIMEOUT_MS)
            expect(row.locator('[data-field="status"]')).to_have_text("queued")
            client.cancel(blocker)
        expect(row.locator('[data-field="status"]')).to_have_text("succeeded", timeout=90_000)
        expect(row.locator('[data-count="succeeded"]')).to_have_text("18")
        assert alice_page.evaluate("window.notReloaded") is True
        assert row.locator('[data-field="best"]').inner_text() != "–"
        alice_page.screenshot(path=str(shots / "dashboard-sweeps.png"), clip={"x": 0, "y": 0, "width": 1360,
                                                                             "height": 260})

        row.locator('[data-field="name"]').click()
        alice_page.wait_for_url(re.compile(rf"/ui/sweeps/{sweep['id']}$"))
        heatmap = alice_page.get_by_test_id("sweep-heatmap")
        expect(heatmap).to_have_attribute("data-cells", "18", timeout=UI_TIMEOUT_MS)
        # Figure 4: width down the side, radius across, one panel per regime, a number in every cell.
        panels = heatmap.locator("svg.panel")
        assert [panels.nth(i).get_attribute("data-split") for i in range(panels.count())] == ["regular", "constrained"]
        with served.client(served.alice) as client:
            table = client.sweep_summary(sweep["id"], rows="model.width", cols="constraint.radius", split="regime")
        assert heatmap.get_attribute("data-scale") == "log"
        assert cells_shown(heatmap) == cells_of(table)
        # Hovering a cell says where it is, its value and the config that achieved it.
        best_cell = table["panels"][1]["cells"][2][2]
        heatmap.locator(f'a.cell[data-job-id="{best_cell["job_id"]}"]').hover()
        expect(heatmap.locator(".heatmap-tip")).to_contain_text(
            f"model.width = 128, constraint.radius = 10, regime = constrained\nmin train_loss = {best_cell['value']}")
        alice_page.mouse.move(1, 1)
        expect(heatmap.locator(".heatmap-tip")).to_be_hidden()
        box = alice_page.locator(".heatmap-box").bounding_box()
        alice_page.screenshot(path=str(shots / "dashboard-sweep.png"),
                              clip={"x": 0, "y": 0, "width": 1360, "height": box["y"] + box["height"] + 20})

        # Another metric: the cells change to its values, and the view is in the URL.
        assert {"train_loss", "w_dist", "jacobian_sigma_min"} <= set(table["metrics"])
        alice_page.select_option('select[name="metric"]', "w_dist")
        with served.client(served.alice) as client:
            w_dist = client.sweep_summary(sweep["id"], rows="model.width", cols="constraint.radius", split="regime",
                                          metric="w_dist")
        wait_until(lambda: cells_shown(heatmap) == cells_of(w_dist), 10, "the w_dist heatmap", poll=0.1)
        assert "metric=w_dist" in alice_page.url

        # A cell opens the job that achieved its value.
        best = w_dist["panels"][1]["cells"][0][1]["job_id"]
        heatmap.locator(f'a.cell[data-job-id="{best}"]').click()
        alice_page.wait_for_url(re.compile(rf"/ui/jobs/{best}$"))
        expect(alice_page.get_by_test_id("job-status")).to_have_text("succeeded")
        # The sweep links to its jobs: the jobs page filtered by it.
        alice_page.go_back()
        alice_page.get_by_test_id("sweep-jobs").click()
        alice_page.wait_for_url(re.compile(rf"/ui/jobs\?sweep_id={sweep['id']}$"))
        expect(alice_page.locator("tbody tr")).to_have_count(18)

    def test_another_user_never_sees_alices_jobs(self, served: Served, browser: Any, watch: Watch) -> None:
        context = new_context(browser, watch)
        page = context.new_page()
        sign_in(page, served.url, served.bob)
        assert page.locator("tbody tr").count() == 0
        for job_id in self.jobs.values():
            assert page.locator(f'tr[data-job-id="{job_id}"]').count() == 0
            response = page.goto(f"{served.url}/ui/jobs/{job_id}")
            assert response is not None and response.status == 404
        page.goto(f"{served.url}/ui/sweeps")
        assert page.locator("tbody tr").count() == 0
        for sweep_id in self.sweeps.values():
            response = page.goto(f"{served.url}/ui/sweeps/{sweep_id}")
            assert response is not None and response.status == 404
            assert page.get_by_test_id("not-found").is_visible()
        context.close()

    def test_a_forged_cross_site_post_is_refused(self, served: Served, alice_page: Any) -> None:
        with served.client(served.alice) as client:
            # The worker is free again, so hold this job in the queue behind a long one while we attack it.
            blocker = client.submit(spec("blocker", "regular", 200_000, radius=None, every=1000))["id"]
            target = client.submit(spec("target", "regular", 10, radius=None))["id"]
        port = free_port()
        attacks = {
            "/cancel.html": f'<form method="post" action="{served.url}/v1/jobs/{target}/cancel"></form>',
            "/logout.html": f'<form method="post" action="{served.url}/ui/logout"></form>',
        }
        with attacker_site(port, attacks):
            for path in attacks:
                alice_page.goto(f"http://127.0.0.1:{port}{path}")
                alice_page.wait_for_url(re.compile(re.escape(served.url)))
                assert "csrf_failed" in alice_page.content(), path
        with served.client(served.alice) as client:
            assert client.job(target)["status"] == "queued"  # not cancelled
            client.cancel(target)
            client.cancel(blocker)
        alice_page.goto(served.url + "/ui/jobs")  # still signed in
        assert "/ui/jobs" in alice_page.url and alice_page.get_by_test_id("sign-out").is_visible()

    def test_sign_out_ends_the_session(self, served: Served, alice_page: Any) -> None:
        alice_page.goto(served.url + "/ui/jobs")
        alice_page.get_by_test_id("sign-out").click()
        alice_page.wait_for_url(re.compile(r"/ui/login"))
        assert alice_page.context.cookies() == []
        alice_page.goto(served.url + "/ui/jobs")
        assert "/ui/login" in alice_page.url


class _Attacker(http.server.BaseHTTPRequestHandler):
    pages: dict[str, str] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        form = self.pages.get(self.path)
        body = (f"<!doctype html><html><body>{form}<script>document.forms[0].submit()</script></body></html>"
                if form else "not here").encode()
        self.send_response(200 if form else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


class attacker_site:  # noqa: N801 (used as a context manager)
    """Another origin on loopback (same site, another port) whose pages auto-submit a form to the service."""

    def __init__(self, port: int, pages: dict[str, str]) -> None:
        handler = type("Handler", (_Attacker,), {"pages": pages})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)

    def __enter__(self) -> None:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
