"""The embedded default under load: `narrownet serve` (SQLite database, SQLite broker) and 50 concurrent clients.

Starts `narrownet serve --print-key` in a temporary NARROWNET_HOME, creates one API key per client, then:

  1. baseline: one client submits --baseline-submits tiny jobs one after another (no contention) and waits
     for them to finish;
  2. load: --clients clients start together; each submits --submits tiny jobs (reading each back once
     after its 201), then polls its jobs every --poll-interval seconds until all have finished.

It prints the submit latencies (p50/p99 of the load phase and their ratio to the baseline), every answer
that was not a 201, client timeouts, how the accepted jobs ended, jobs that exist although their client was
not told 201 (orphans), and how many "database is locked" lines serve logged. Run:

    .venv/bin/python bench/bench_embedded_load.py [--clients 50] [--submits 4] [--json out.json]

tests/reliability/test_reliability_embedded_load.py runs the same load and asserts the behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from core.db.models import Job
from core.db.session import make_engine
from narrownet.cluster import Serve

TINY_SPEC: dict[str, Any] = {
    "name": "load", "regime": "constrained", "model": {"arch": "shallow", "width": 8},
    "data": {"source": "synthetic", "n": 16, "d": 4}, "device": "cpu",
    "optim": {"name": "gd", "lr": 0.1, "iterations": 10}, "metrics_every": 10,
}
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
CLIENT_TIMEOUT_SECONDS = 60.0  # what the probe used: a server must answer well within it


@dataclass
class Submit:
    key: str
    status: int | None  # None: no answer (client timeout or connection error)
    seconds: float
    code: str | None = None  # the error code of a non-2xx answer, or the exception's name
    job_id: str | None = None
    retry_after: str | None = None


@dataclass
class LoadReport:
    submits: list[Submit] = field(default_factory=list)
    poll_statuses: Counter[int | None] = field(default_factory=Counter)
    poll_seconds: list[float] = field(default_factory=list)
    final: dict[str, str] = field(default_factory=dict)  # job id -> last status its client saw
    seconds: float = 0.0

    @property
    def accepted(self) -> list[Submit]:
        return [s for s in self.submits if s.status == 201]

    def answers(self) -> Counter[str]:
        return Counter(f"{s.status} {s.code}" if s.code else str(s.status) for s in self.submits)

    def latencies(self) -> list[float]:
        """Seconds of every submit that got an answer (timeouts have no latency to report)."""
        return [s.seconds for s in self.submits if s.status is not None]


def percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def create_keys(database_url: str, n: int) -> list[str]:
    from api.services.keys import create_key

    engine = make_engine(database_url)
    try:
        with sessionmaker(bind=engine).begin() as session:
            return [create_key(session, f"load-{i}")[1] for i in range(n)]
    finally:
        engine.dispose()


async def _client(url: str, key: str, submits: int, poll_interval: float, deadline: float,
                  report: LoadReport) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=CLIENT_TIMEOUT_SECONDS) as client:
        async def get(job_id: str) -> None:
            t0 = time.perf_counter()
            try:
                response = await client.get(f"/v1/jobs/{job_id}")
            except httpx.HTTPError:
                report.poll_statuses[None] += 1
                return
            report.poll_seconds.append(time.perf_counter() - t0)
            report.poll_statuses[response.status_code] += 1
            if response.status_code == 200:
                report.final[job_id] = response.json()["status"]

        for _ in range(submits):
            t0 = time.perf_counter()
            try:
                response = await client.post("/v1/jobs", json=TINY_SPEC)
            except httpx.HTTPError as exc:
                report.submits.append(Submit(key, None, time.perf_counter() - t0, type(exc).__name__))
                continue
            submit = Submit(key, response.status_code, time.perf_counter() - t0,
                            retry_after=response.headers.get("retry-after"))
            if response.status_code == 201:
                submit.job_id = response.json()["id"]
                report.final[submit.job_id] = "queued"
            else:
                try:
                    submit.code = response.json()["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    submit.code = "unparsable"
            report.submits.append(submit)
            if submit.job_id is not None:
                await get(submit.job_id)
        mine = [s.job_id for s in report.submits if s.key == key and s.job_id is not None]
        while time.monotonic() < deadline:
            pending = [j for j in mine if report.final.get(j) not in TERMINAL]
            if not pending:
                return
            await asyncio.sleep(poll_interval)
            for job_id in pending:
                await get(job_id)


async def run_load(url: str, keys: list[str], *, submits: int, poll_interval: float = 0.5,
                   timeout: float = 900.0) -> LoadReport:
    """Every key a client, all started together; returns once every accepted job has finished (or at timeout)."""
    report = LoadReport()
    t0 = time.monotonic()
    await asyncio.gather(*(_client(url, key, submits, poll_interval, t0 + timeout, report) for key in keys))
    report.seconds = time.monotonic() - t0
    return report


def stored_jobs(database_url: str) -> dict[str, str]:
    """job id -> status, of every job in the database, read straight from it."""
    engine = make_engine(database_url)
    try:
        with sessionmaker(bind=engine)() as session:
            return {r.id: r.status.value for r in session.execute(select(Job.id, Job.status))}
    finally:
        engine.dispose()


def summarize(report: LoadReport, stored: dict[str, str], known: set[str]) -> dict[str, Any]:
    """The figures: what the clients were answered, and what became of the jobs."""
    accepted = {s.job_id for s in report.accepted}
    latencies = report.latencies()
    return {
        "submits": len(report.submits),
        "answers": dict(report.answers()),
        "server_errors": sum(1 for s in report.submits if s.status is not None and s.status >= 500),
        "client_timeouts": sum(1 for s in report.submits if s.status is None),
        "submit_p50_s": percentile(latencies, 0.50),
        "submit_p99_s": percentile(latencies, 0.99),
        "submit_max_s": max(latencies, default=float("nan")),
        "polls": sum(report.poll_statuses.values()),
        "poll_answers": {str(k): v for k, v in report.poll_statuses.items()},
        "poll_p99_s": percentile(report.poll_seconds, 0.99),
        "accepted_statuses": dict(Counter(stored.get(j, "missing") for j in accepted)),
        "orphans": sorted(set(stored) - accepted - known),
        "seconds_until_all_finished": report.seconds,
    }


def run(clients: int, submits: int, baseline_submits: int, poll_interval: float, keep: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="narrownet-load-"))
    serve = Serve(tmp / "home", {"NARROWNET_LOG_LEVEL": "INFO"})
    serve.start()
    try:
        keys = create_keys(serve.database_url, clients + 1)
        baseline = asyncio.run(run_load(serve.url, keys[:1], submits=baseline_submits,
                                        poll_interval=poll_interval))
        known = set(stored_jobs(serve.database_url))
        load = asyncio.run(run_load(serve.url, keys[1:], submits=submits, poll_interval=poll_interval))
        figures = summarize(load, stored_jobs(serve.database_url), known)
        base_latencies = baseline.latencies()
        figures["baseline"] = {"submits": len(baseline.submits), "answers": dict(baseline.answers()),
                               "submit_p50_s": percentile(base_latencies, 0.50),
                               "submit_p99_s": percentile(base_latencies, 0.99)}
        figures["database_is_locked_log_lines"] = serve.log_text().count("database is locked")
        return figures
    finally:
        serve.stop()
        if keep:
            print(f"NARROWNET_HOME and serve.log kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--submits", type=int, default=4, help="submits per client")
    parser.add_argument("--baseline-submits", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep NARROWNET_HOME and serve.log afterwards")
    args = parser.parse_args(argv)
    figures = run(args.clients, args.submits, args.baseline_submits, args.poll_interval, args.keep)
    base = figures["baseline"]
    print(f"narrownet serve (SQLite + SQLite broker), {args.clients} clients x {args.submits} submits + polling")
    print(f"  answers to {figures['submits']} submits: {figures['answers']}; client timeouts: "
          f"{figures['client_timeouts']}; 5xx: {figures['server_errors']}")
    print(f"  submit latency: p50 {figures['submit_p50_s'] * 1000:.0f} ms, "
          f"p99 {figures['submit_p99_s'] * 1000:.0f} ms, max {figures['submit_max_s'] * 1000:.0f} ms")
    print(f"  baseline (1 client, {base['submits']} sequential submits): p50 {base['submit_p50_s'] * 1000:.0f} ms, "
          f"p99 {base['submit_p99_s'] * 1000:.0f} ms")
    print(f"  ratio load/baseline: p50 {figures['submit_p50_s'] / base['submit_p50_s']:.1f}x, "
          f"p99 {figures['submit_p99_s'] / base['submit_p99_s']:.1f}x")
    print(f"  polls: {figures['polls']} ({figures['poll_answers']}), p99 {figures['poll_p99_s'] * 1000:.0f} ms")
    print(f"  accepted jobs ended: {figures['accepted_statuses']}; orphans (created, client not told 201): "
          f"{len(figures['orphans'])}")
    print(f"  all finished after {figures['seconds_until_all_finished']:.1f} s; 'database is locked' lines in the "
          f"log: {figures['database_is_locked_log_lines']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    ok = (figures["server_errors"] == 0 and figures["client_timeouts"] == 0 and not figures["orphans"]
          and set(figures["accepted_statuses"]) <= {"succeeded"})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
