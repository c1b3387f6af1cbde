"""Dashboard benchmark: the targets of the dashboard issue that can be measured here, each against a baseline
measured in the same run. Starts its own app (uvicorn in a thread, the embedded SQLite database under a temp
dir) and drives Debian's Chromium with Playwright. Run:

    .venv/bin/python bench/bench_dashboard.py [--jobs 10000] [--runs 50] [--points 10000] [--sections 1,2,3,4,5,6]
                                              [--postgres]

  1. jobs page: GET /ui/jobs (first page, server-rendered) and GET /v1/jobs?limit=50 for an owner of --jobs
     jobs vs an owner of 10 jobs (median of 30 requests, server time seen by an HTTP client on loopback).
  2. series: GET /v1/series for --runs jobs x --points points, reduced to 2 points per pixel column
     (points=2400) vs full resolution.
  3. browser: /ui/compare with --runs jobs (fetch + align + first draw, measured in the page) vs 1 job; and
     uPlot alone drawing --runs x --points points at full resolution vs 1 x --points.
     2 and 3 run twice: reading the runs' points one by one, then once their series are packed (as a finished
     job's are), with the ratio packed / points.
  4. live latency: a point stored by a writer (as a worker does) until it arrives on an open event stream.
  5. page weight: JS + CSS per page, gzipped.
  6. sweep heatmap: /ui/sweeps/{id} for a finished 50 x 50 grid (2,500 configs; and 2 regimes x 50 x 50):
     fetch of /v1/sweeps/{id}/summary and drawing (SVG built, styled and laid out; and to the next painted
     frame), measured in the page, vs a 5 x 5 grid.
"""

from __future__ import annotations

import argparse
import gzip
import math
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, make_url, update
from sqlalchemy.orm import Session

from api.app import create_app
from api.pages import STATIC_DIR
from api.services.keys import create_key
from core.db.migrate import upgrade
from core.db.models import Job, JobStatus, MetricPoint, Sweep, new_id, utcnow
from core.db.session import make_engine
from core.repositories.series import store_series
from core.settings import Settings
from narrownet.client import NarrownetClient
from narrownet.processes import serving_in_thread

SPEC = {"name": "bench", "regime": "constrained", "model": {"arch": "shallow", "width": 16},
        "data": {"source": "synthetic", "n": 64, "d": 4}, "optim": {"name": "gd", "lr": 0.1, "iterations": 10}}
HERE = Path(__file__).resolve().parent.parent / "api" / "templates"


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def add_jobs(session: Session, owner_id: str, count: int, **values: Any) -> list[str]:
    ids = [new_id() for _ in range(count)]
    now = utcnow()
    rows = [{"id": i, "owner_id": owner_id, "name": f"job{n}", "regime": ("regular", "constrained")[n % 2],
             "spec": SPEC, "queue": "cpu", "status": JobStatus.SUCCEEDED, "step": 10, "total_steps": 10,
             "latest_metrics": {"train_loss": 0.1}, "attempt": 1, "created_at": now, "updated_at": now, **values}
            for n, i in enumerate(ids)]
    for start in range(0, count, 2000):
        session.execute(insert(Job), rows[start:start + 2000])
    return ids


def add_points(session: Session, job_ids: list[str], points: int, seed: int = 0) -> None:
    for k, job_id in enumerate(job_ids):
        rows = [{"job_id": job_id, "step": s, "attempt": 1,
                 "values": {"train_loss": math.exp(-s / 3000) * (1 + 0.05 * math.sin(s * (k + 1 + seed)))}}
                for s in range(points)]
        for start in range(0, points, 5000):
            session.execute(insert(MetricPoint), rows[start:start + 5000])


def page_weights() -> dict[str, int]:
    """gzipped bytes of the JS and CSS each page loads (modules followed through their imports)."""
    def assets(template: str) -> set[Path]:
        text = (HERE / template).read_text()
        if "{% extends" in text:
            text += (HERE / "base.html").read_text()
        found = {STATIC_DIR / p for p in re.findall(r'(?:src|href)="/static/([^"]+\.(?:js|css))"', text)}
        todo = [p for p in found if p.suffix == ".js" and "vendor" not in p.parts]
        while todo:
            module = todo.pop()
            for dep in re.findall(r'from "\./([^"]+)"', module.read_text()):
                path = module.parent / dep
                if path not in found:
                    found.add(path)
                    todo.append(path)
        return found

    return {t: sum(len(gzip.compress(p.read_bytes(), 9)) for p in assets(t))
            for t in ("login.html", "jobs.html", "job.html", "compare.html", "sweeps.html", "sweep.html",
                      "docs.html")}


def add_sweep(session: Session, owner_id: str, widths: int, radii: int, regimes: int = 1) -> str:
    """A finished sweep of regimes x widths x radii succeeded configs whose losses span 12 decades."""
    grid: dict[str, list[Any]] = {"regime": ["regular", "constrained"][:regimes],
                                  "model.width": [8 * (i + 1) for i in range(widths)],
                                  "constraint.radius": [round(0.1 * (j + 1), 3) for j in range(radii)]}
    sweep_id, now = new_id(), utcnow()
    session.add(Sweep(id=sweep_id, owner_id=owner_id, name=f"bench-{regimes}x{widths}x{radii}",
                      spec={"name": "bench", "base": SPEC, "grid": grid,
                            "objective": {"metric": "train_loss", "mode": "min"}},
                      axes=list(grid), n_configs=regimes * widths * radii, objective_metric="train_loss",
                      objective_mode="min", created_at=now, updated_at=now))
    session.flush()
    rows = []
    for k, regime in enumerate(grid["regime"]):
        for i, width in enumerate(grid["model.width"]):
            for j, radius in enumerate(grid["constraint.radius"]):
                loss = 10 ** (-12 * (i + j) / max(widths + radii - 2, 1)) * (1 + k)
                rows.append({"id": new_id(), "owner_id": owner_id, "name": "cfg", "regime": regime, "spec": SPEC,
                             "queue": "cpu", "status": JobStatus.SUCCEEDED, "step": 10, "total_steps": 10,
                             "attempt": 1, "sweep_id": sweep_id, "sweep_index": len(rows),
                             "params": {"regime": regime, "model.width": width, "constraint.radius": radius},
                             "final_metrics": {"train_loss": loss, "w_dist": radius * 0.9},
                             "created_at": now, "updated_at": now, "finished_at": now})
    session.execute(insert(Job), rows)
    return sweep_id


@contextmanager
def signed_in_page(base: str, key: str) -> Iterator[Any]:
    """A Chromium page (Debian's, headless) signed in to the dashboard at `base` with `key`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 860})
            page.goto(base + "/ui/login")
            page.fill('input[name="api_key"]', key)
            page.click('[data-testid="sign-in"]')
            page.wait_for_url(re.compile("/ui/jobs"))
            yield page
        finally:
            browser.close()


def heatmap_figures(base: str, key: str, sweeps: dict[str, str], shots: Path | None) -> None:
    """Per sweep: (fetch ms, draw ms, frame ms) of the sweep page's heatmap, median of 5 page loads."""
    with signed_in_page(base, key) as page:
        heatmap = '[data-testid="sweep-heatmap"]'
        print("\n6. sweep heatmap on /ui/sweeps/{id}, log colour (median of 5 page loads; in the page: fetch of the "
              "summary, then SVG built + styled + laid out, then to the next painted frame)")
        figures: dict[str, tuple[float, float, float]] = {}
        for label, sweep_id in sweeps.items():
            runs = []
            for _ in range(6):
                page.goto(f"{base}/ui/sweeps/{sweep_id}")
                deadline = time.monotonic() + 120
                while not page.get_attribute(heatmap, "data-frame-ms"):
                    assert time.monotonic() < deadline, "the sweep page did not draw"
                    time.sleep(0.02)
                runs.append(tuple(float(page.get_attribute(heatmap, a) or "nan")
                                  for a in ("data-fetch-ms", "data-draw-ms", "data-frame-ms")))
            fetch, draw, frame = (statistics.median(r[i] for r in runs[1:]) for i in range(3))
            figures[label] = (fetch, draw, frame)
            cells = page.get_attribute(heatmap, "data-cells")
            if shots is not None:
                page.screenshot(path=str(shots / f"heatmap-{label.replace(' ', '')}.png"), full_page=True)
            print(f"  {label:24s} {cells:>5s} cells: fetch {fetch:7.1f} ms   draw {draw:6.1f} ms   "
                  f"painted {frame:6.1f} ms after the data   fetch + painted {fetch + frame:7.1f} ms")
        small = figures["5 x 5"]
        for label, (fetch, _, frame) in figures.items():
            if label != "5 x 5":
                print(f"  ratio {label} / 5 x 5: fetch {fetch / small[0]:5.1f}   painted {frame / small[2]:5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--sections", default="1,2,3,4,5,6", help="which of the measurements to run")
    parser.add_argument("--postgres", action="store_true", help="a database of its own on 127.0.0.1:5432 instead "
                        "of the embedded SQLite")
    parser.add_argument("--heatmap-shots", type=Path, default=None, help="save section 6's pages as PNGs here")
    args = parser.parse_args()
    sections = {int(n) for n in args.sections.split(",")}

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-dashboard-")))
        url = f"sqlite:///{tmp / 'narrownet.db'}"
        if args.postgres:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ as a package, as its scripts do
            from bench.bench_sweeps import postgres_database

            url = stack.enter_context(postgres_database())
        upgrade(url)
        settings = Settings(home=tmp, database_url=url, broker_url=f"sqla+sqlite:///{tmp / 'broker.db'}",
                            run_migrations_on_start=False, rate_limit_per_minute=1_000_000)
        app = create_app(settings)
        writer = make_engine(url)
        stack.callback(writer.dispose)
        with Session(writer) as s, s.begin():
            big, big_key = create_key(s, "big")
            small, small_key = create_key(s, "small")
            curves, curves_key = create_key(s, "curves")
            sweeper, sweeper_key = create_key(s, "sweeper")
            big_id, small_id, curves_id, sweeper_id = big.id, small.id, curves.id, sweeper.id
        t0 = time.perf_counter()
        runs: list[str] = []
        with Session(writer) as s, s.begin():
            if sections & {1}:
                add_jobs(s, big_id, args.jobs)
                add_jobs(s, small_id, 10)
            if sections & {2, 3, 4}:
                runs = add_jobs(s, curves_id, args.runs)
                add_points(s, runs, args.points)
            heatmaps = {"5 x 5": add_sweep(s, sweeper_id, 5, 5), "50 x 50": add_sweep(s, sweeper_id, 50, 50),
                        "2 regimes x 50 x 50": add_sweep(s, sweeper_id, 50, 50, regimes=2)} if 6 in sections else {}
        print(f"setup: {args.jobs} + 10 jobs, {args.runs} x {args.points} points, sweeps {list(heatmaps)} in "
              f"{time.perf_counter() - t0:.1f}s ({make_url(url).get_backend_name()})")

        base = stack.enter_context(serving_in_thread(app))

        def signed_in(key: str) -> httpx.Client:
            client = httpx.Client(base_url=base, timeout=120)
            assert client.post("/ui/login", data={"api_key": key}).status_code == 303
            return client

        if 1 in sections:  # jobs page
            big_browser, small_browser = signed_in(big_key), signed_in(small_key)
            print("\n1. jobs table, first page (median of 30)")
            for name, path in (("/ui/jobs (HTML)", "/ui/jobs"), ("/v1/jobs?limit=50 (JSON)", "/v1/jobs?limit=50"),
                               ("/ui/jobs?regime=regular", "/ui/jobs?regime=regular")):
                large = median_ms(lambda p=path: big_browser.get(p).raise_for_status(), 30)
                small_ms = median_ms(lambda p=path: small_browser.get(p).raise_for_status(), 30)
                print(f"  {name:28s} {args.jobs} jobs {large:7.1f} ms   10 jobs {small_ms:7.1f} ms   "
                      f"ratio {large / small_ms:5.2f}")

        # Sections 2 and 3 read the runs' points one by one first (a running job's way), then again once their
        # series are packed, as a worker's finish packs them (core/repositories/series.py): a ratio in one run.
        curves_client = NarrownetClient(base, curves_key, timeout=300)
        before: dict[str, float] = {}
        for packed in (False, True):
            if packed and sections & {2, 3}:
                t0 = time.perf_counter()
                with Session(writer) as s, s.begin():
                    for job_id in runs:
                        store_series(s, job_id)
                print(f"\npacked {len(runs)} series of {args.points} points in {time.perf_counter() - t0:.1f}s")
            way = "packed series" if packed else "points one by one"
            figures: dict[str, float] = {}
            if 2 in sections:
                figures.update(series_figures(curves_client, runs, args, way))
            if 3 in sections:
                figures.update(browser_figures(base, curves_key, runs, args, way, draw_alone=not packed))
            if packed and figures:
                print("\n  packed / points: " + ", ".join(f"{name} {value / before[name]:.2f}"
                                                         for name, value in figures.items()))
            before = figures

        if 4 in sections:
            live_latency(base, curves_key, writer, curves_id)
        if 5 in sections:
            print("\n5. JS + CSS per page, gzipped (target: at most ~150 KB)")
            for template, size in page_weights().items():
                print(f"  {template:14s} {size / 1024:7.1f} KB")
        if 6 in sections:
            heatmap_figures(base, sweeper_key, heatmaps, args.heatmap_shots)

def series_figures(client: NarrownetClient, runs: list[str], args: argparse.Namespace, way: str) -> dict[str, float]:
    ids = ",".join(runs)
    print(f"\n2. /v1/series, {args.runs} jobs x {args.points} points, {way} (median of 5)")

    def series(job_ids: str, points: int | None = None) -> Callable[[], object]:
        params = {"job_ids": job_ids, **({"points": points} if points else {})}
        return lambda: client.series(**params)

    reduced = median_ms(series(ids, 2400), 5)
    full = median_ms(series(ids), 3)
    one = median_ms(series(runs[0], 2400), 5)
    print(f"  reduced (points=2400): {reduced:8.1f} ms   full resolution: {full:8.1f} ms   "
          f"ratio full/reduced {full / reduced:5.2f}   one job reduced: {one:6.1f} ms")
    return {"series reduced": reduced, "series full": full}


def browser_figures(base: str, key: str, runs: list[str], args: argparse.Namespace, way: str, *,
                    draw_alone: bool) -> dict[str, float]:
    with signed_in_page(base, key) as page:

        def compare(ids: list[str]) -> tuple[float, float]:
            """(fetch ms, align + draw ms) of the page's first load, as the page measured them."""
            page.goto(base + "/ui/compare?ids=" + ",".join(ids))
            chart = '[data-testid="compare-chart"]'
            deadline = time.monotonic() + 120
            while not (draw := page.get_attribute(chart, "data-draw-ms")):
                assert time.monotonic() < deadline, "the compare page did not draw"
                time.sleep(0.05)
            return float(page.get_attribute(chart, "data-fetch-ms") or "nan"), float(draw)

        many = [compare(runs) for _ in range(3)]
        single = [compare(runs[:1]) for _ in range(3)]
        fetch_many, draw_many = (statistics.median(x[i] for x in many) for i in (0, 1))
        fetch_one, draw_one = (statistics.median(x[i] for x in single) for i in (0, 1))
        print(f"\n3. browser (Chromium, headless, software rendering; median of 3 page loads), {way}\n"
              f"  /ui/compare {len(runs)} runs: fetch {fetch_many:7.1f} ms, align + draw {draw_many:6.1f} ms   "
              f"1 run: fetch {fetch_one:6.1f} ms, align + draw {draw_one:5.1f} ms   "
              f"draw ratio {draw_many / draw_one:5.2f}")
        figures = {"compare fetch": fetch_many, "compare fetch + draw": fetch_many + draw_many}
        if not draw_alone:
            return figures
        draw = """async ([runs, n]) => {
            const xs = Array.from({length: n}, (_, i) => i);
            const curve = (k) => xs.map(i => Math.exp(-i / 3000) * (1 + 0.05 * Math.sin(i * (k + 1))));
            const data = [xs, ...Array.from({length: runs}, (_, k) => curve(k))];
            const el = document.createElement('div'); document.body.append(el);
            const series = [{}, ...data.slice(1).map(() => ({stroke: 'blue'}))];
            let drawn;
            const frame = () => Promise.race([new Promise((resolve) => { drawn = resolve; }),
                                              new Promise((_, reject) => setTimeout(() => reject("no draw"), 60000))]);
            const hooks = {draw: [() => drawn(performance.now())]};
            let next = frame();
            const t0 = performance.now();
            const u = new uPlot({width: 1200, height: 300, series, hooks}, data, el);
            const first = (await next) - t0;
            next = frame();
            const t1 = performance.now();
            u.redraw(true);
            const redraw = (await next) - t1;
            u.destroy(); el.remove();
            return [first, redraw];
        }"""
        full = [page.evaluate(draw, [len(runs), args.points]) for _ in range(3)]
        alone = [page.evaluate(draw, [1, args.points]) for _ in range(3)]
        f, a = statistics.median(x[0] for x in full), statistics.median(x[0] for x in alone)
        r = statistics.median(x[1] for x in full)
        print(f"  uPlot alone, {len(runs)} x {args.points} points at full resolution: first draw {f:7.1f} ms, "
              f"redraw {r:6.1f} ms   1 x {args.points}: {a:5.1f} ms   ratio {f / a:5.1f}")
        return figures


def live_latency(base: str, key: str, writer: Any, owner_id: str) -> None:
    with Session(writer) as s, s.begin():
        job_id = add_jobs(s, owner_id, 1, status=JobStatus.RUNNING)[0]
    arrived: dict[int, float] = {}
    ready = threading.Event()

    def listen() -> None:
        with NarrownetClient(base, key, timeout=60) as client:
            for event in client.events(job_id):
                ready.set()
                if event.event == "metrics":
                    now = time.perf_counter()
                    for p in event.json()["points"]:
                        arrived.setdefault(p["step"], now)
                elif event.event == "status" and event.json()["status"] == "succeeded":
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(30)
    stored: dict[int, float] = {}
    for step in range(20):
        with Session(writer) as s, s.begin():
            s.execute(insert(MetricPoint), [{"job_id": job_id, "step": step, "attempt": 1,
                                             "values": {"train_loss": 1.0}}])
        stored[step] = time.perf_counter()
        time.sleep(0.37)  # off the poll period, so the delays spread over it
    with Session(writer) as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.SUCCEEDED, updated_at=utcnow()))
    thread.join(30)
    delays = sorted((arrived[s] - stored[s]) * 1000 for s in stored if s in arrived)
    print(f"\n4. live: stored point -> on an open event stream ({len(delays)} points, poll 0.5 s): "
          f"median {statistics.median(delays):.0f} ms, max {delays[-1]:.0f} ms")


if __name__ == "__main__":
    main()
