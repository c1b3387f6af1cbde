"""Service benchmark: job submissions vs GET /healthz under 50 concurrent clients, and queue delay.

Starts everything itself on loopback: a fresh PostgreSQL database, an empty Redis database number, one
uvicorn API process and (for the queue-delay phase only) one idle Celery worker. Run:

    .venv/bin/python bench/bench_service.py [--clients 50] [--duration 15] [--delay-jobs 7]

With --profile DIR, py-spy samples the API during each load phase; bench/profile_report.py reads the files.
With --floor, the API is bench/floor_app.py (the service's app plus two /floor routes that validate, check the key
and answer as a submission and a list page do, with no database and no broker) and two more phases measure them:
the most any implementation of those requests could reach in this process model, next to /healthz.

Phases (same server, same run):
  1. healthz: every client loops GET /healthz for --duration seconds.
  2. submit:  every client (its own API key) loops POST /v1/jobs for --duration seconds.
  2b. poll:   every client loops GET /v1/jobs/{id} (one of its own jobs), then GET /v1/jobs (its first page of
              20), --duration seconds each: status polling, compared with /healthz as the submissions are.
              Each client's page is the same for the whole phase, so the API answers it from the page it
              kept (api/services/page_cache.py) but once a second; --list-cache-seconds 0 reads every one.
  3. delay:   the submitted backlog is cancelled and the broker emptied, a worker starts, then one tiny job
              at a time is submitted; queue delay = time from the 201 answer until GET shows `running`
              (polled every 5 ms), and the server-side started_at - created_at of the same job.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import redis

from narrownet.processes import free_port, start_process, stop_all, wait_http

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
TINY_SPEC = {
    "name": "bench", "regime": "constrained", "model": {"arch": "shallow", "width": 8},
    "data": {"source": "synthetic", "n": 16, "d": 4},
    "optim": {"name": "gd", "lr": 0.1, "iterations": 10}, "metrics_every": 10,
}


@dataclass
class LoadResult:
    name: str
    ok: int
    errors: dict[int, int]
    seconds: float
    latencies_ms: list[float]
    api_cpu_s: float = float("nan")  # CPU time (user + system) the API process spent in the phase
    client_cpu_s: float = float("nan")  # the same for this load generator
    db_cpu_s: float = float("nan")  # the same for the PostgreSQL backends serving the benchmark's database

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.api_cpu_s / self.ok if self.ok else float("nan")

    @property
    def rate(self) -> float:
        return self.ok / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def empty_redis_db() -> int:
    for db in range(15, 0, -1):
        if redis.Redis(REDIS_HOST, REDIS_PORT, db=db).dbsize() == 0:
            return db
    raise SystemExit("no empty Redis database number")


def backends_cpu_seconds(db_name: str | None) -> dict[int, float]:
    """CPU so far of each PostgreSQL backend connected to `db_name` (the API's pooled connections)."""
    if db_name is None:
        return {}
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        pids = [row[0] for row in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (db_name,))]
    return {pid: process_cpu_seconds(pid) for pid in pids}


def process_cpu_seconds(pid: int | None) -> float:
    """user + system CPU of one process so far (Linux /proc), NaN where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Profiler:
    """py-spy sampling the API process during each load phase (--profile DIR): one collapsed-stack file per
    phase, threads included, so the handler's worker threads show up (cProfile sees only the event loop)."""

    def __init__(self, api_pid: int | None, out: Path | None, db_name: str | None = None) -> None:
        self.api_pid, self.out, self.db_name = api_pid, out, db_name

    def start(self, name: str, duration: float) -> subprocess.Popen[bytes] | None:
        if self.api_pid is None or self.out is None:
            return None
        slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
        return subprocess.Popen([str(PY_SPY), "record", "--pid", str(self.api_pid),
                                 "--format", "raw", "--rate", "250", "--gil", "--duration", str(max(1, int(duration))),
                                 "--output", str(self.out / f"{slug}.txt"), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


NO_PROFILE = Profiler(None, None)
PY_SPY = Path(sys.executable).with_name("py-spy")


async def load(name: str, clients: list[httpx.AsyncClient], duration: float,
               call: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]], expect: int,
               profiler: Profiler = NO_PROFILE) -> LoadResult:
    latencies: list[float] = []
    errors: dict[int, int] = {}
    stop_at = time.perf_counter() + duration

    async def one_client(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            response = await call(client)
            if response.status_code == expect:
                latencies.append((time.perf_counter() - t0) * 1000)
            else:
                errors[response.status_code] = errors.get(response.status_code, 0) + 1

    sampling = profiler.start(name, duration)
    db0 = backends_cpu_seconds(profiler.db_name)
    cpu0, own0, t0 = process_cpu_seconds(profiler.api_pid), time.process_time(), time.perf_counter()
    await asyncio.gather(*(one_client(c) for c in clients))
    seconds, cpu = time.perf_counter() - t0, process_cpu_seconds(profiler.api_pid) - cpu0
    own = time.process_time() - own0
    db = sum(now - db0.get(pid, 0.0) for pid, now in backends_cpu_seconds(profiler.db_name).items())
    if sampling is not None:
        sampling.wait()
    return LoadResult(name, len(latencies), errors, seconds, latencies, cpu, own, db)


GROUPINGS = ("narrownet_submissions_per_transaction", "narrownet_job_polls_per_read")


def groups_so_far(metrics: str) -> dict[str, tuple[float, float]]:
    """Per grouping histogram of the API (api/grouping.py): (groups, requests in them) so far."""
    found = {(name, part): float(value) for name, part, value in re.findall(
        rf"^({'|'.join(GROUPINGS)})_(count|sum) (\S+)$", metrics, re.M)}
    return {name: (found.get((name, "count"), 0.0), found.get((name, "sum"), 0.0)) for name in GROUPINGS}


async def run_load(url: str, keys: list[str], duration: float, profiler: Profiler = NO_PROFILE,
                   floor: bool = False) -> tuple[list[LoadResult], dict[str, tuple[float, float]]]:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {k}"}, limits=limits,
                                 timeout=30) for k in keys]
    try:
        # Warm both paths (connections, first-request imports) before measuring.
        await asyncio.gather(*(c.get("/healthz") for c in clients))
        # ... and the authenticated path's pools (the key check's Redis connections, the read engine), so that the
        # first phase that needs them does not pay for opening them.
        await asyncio.gather(*(c.get("/v1/jobs", params={"limit": 1}) for c in clients))
        health = await load("GET /healthz", clients, duration, lambda c: c.get("/healthz"), 200, profiler)
        before = groups_so_far((await clients[0].get("/metrics")).text)
        submit = await load("POST /v1/jobs", clients, duration, lambda c: c.post("/v1/jobs", json=TINY_SPEC),
                            201, profiler)
        mine = {id(c): (await c.get("/v1/jobs", params={"limit": 1})).json()["items"][0]["id"] for c in clients}
        get_one = await load("GET /v1/jobs/{id}", clients, duration, lambda c: c.get(f"/v1/jobs/{mine[id(c)]}"),
                             200, profiler)
        after = groups_so_far((await clients[0].get("/metrics")).text)
        groups = {name: (after[name][0] - before[name][0], after[name][1] - before[name][1]) for name in GROUPINGS}
        get_list = await load("GET /v1/jobs", clients, duration, lambda c: c.get("/v1/jobs", params={"limit": 20}),
                              200, profiler)
        floors = [
            await load("POST /floor/jobs", clients, duration, lambda c: c.post("/floor/jobs", json=TINY_SPEC), 201,
                       profiler),
            await load("GET /floor/jobs", clients, duration, lambda c: c.get("/floor/jobs", params={"limit": 20}),
                       200, profiler),
        ] if floor else []
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return [health, submit, get_one, get_list, *floors], groups


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def queue_delays(url: str, key: str, jobs: int) -> tuple[list[float], list[float]]:
    """(client-observed 201 -> running, server started_at - created_at), in ms, one idle-worker job at a time."""
    observed, server = [], []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for _ in range(jobs):
            response = client.post("/v1/jobs", json=TINY_SPEC)
            t_created = time.perf_counter()
            response.raise_for_status()
            job_id = response.json()["id"]
            deadline = time.monotonic() + 60
            while True:
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] != "queued":
                    observed.append((time.perf_counter() - t_created) * 1000)
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"job {job_id} was not picked up within 60 s")
                time.sleep(0.005)
            while job["status"] not in ("succeeded", "failed", "cancelled"):  # the worker is idle again
                time.sleep(0.05)
                job = client.get(f"/v1/jobs/{job_id}").json()
            server.append((parse_time(job["started_at"]) - parse_time(job["created_at"])).total_seconds() * 1000)
    return observed, server


def create_keys(env: dict[str, str], n: int) -> list[str]:
    code = ("from core.db.session import unit_of_work\nfrom api.services.keys import create_key\n"
            f"with unit_of_work() as s:\n    print('\\n'.join(create_key(s, f'bench-{{i}}')[1] for i in range({n})))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def cancel_backlog(url: str, keys: list[str], r: redis.Redis) -> int:
    """Cancel every user's still-queued jobs (a queued job is cancelled at once) and drop their messages."""
    r.flushdb()
    cancelled = 0
    for key in keys:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            while items := client.get("/v1/jobs", params={"status": "queued", "limit": 200}).json()["items"]:
                for job in items:
                    client.post(f"/v1/jobs/{job['id']}/cancel").raise_for_status()
                    cancelled += 1
    return cancelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load phase")
    parser.add_argument("--delay-jobs", type=int, default=7)
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the API with py-spy during each phase: DIR/<phase>.txt, collapsed stacks")
    parser.add_argument("--list-cache-seconds", type=float, metavar="S",
                        help="NARROWNET_API_LIST_CACHE_SECONDS for the API (default: the service's, 1 s; 0: off)")
    parser.add_argument("--floor", action="store_true",
                        help="serve bench/floor_app.py and also measure its /floor routes (no database, no broker)")
    args = parser.parse_args()
    if args.profile is not None and not PY_SPY.exists():
        parser.error(f"--profile needs py-spy beside this Python ({PY_SPY}); `make setup` installs it")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)

    db_name = f"narrownet_bench_{secrets.token_hex(4)}"
    redis_db = empty_redis_db()
    home = Path(tempfile.mkdtemp(prefix="narrownet-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")}
    env.update({
        "NARROWNET_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}",
        "NARROWNET_BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}",
        "NARROWNET_HOME": str(home),
        "NARROWNET_LOG_LEVEL": "WARNING",
        # The benchmark measures the server, not the per-key limits that would otherwise answer 429.
        "NARROWNET_RATE_LIMIT_PER_MINUTE": str(10**9),
        "NARROWNET_MAX_QUEUED_JOBS_PER_USER": str(10**9),
    })
    if args.list_cache_seconds is not None:
        env["NARROWNET_API_LIST_CACHE_SECONDS"] = str(args.list_cache_seconds)
    processes: list[subprocess.Popen[bytes]] = []
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db_name}"')
    try:
        subprocess.run([sys.executable, "-m", "narrownet", "db", "upgrade"], env=env, check=True,
                       capture_output=True)
        keys = create_keys(env, args.clients)
        factory = "bench.floor_app:create_app" if args.floor else "api.app:create_server_app"
        api = start_process([sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1",
                     "--port", str(port), "--log-level", "warning", "--no-access-log"], env, home / "api.log")
        processes.append(api)
        if not wait_http(f"{url}/readyz", api):
            raise SystemExit(f"the API did not become ready (see {home / 'api.log'})")

        results, groups = asyncio.run(run_load(
            url, keys, args.duration, Profiler(api.pid, args.profile, db_name), args.floor))
        health, submit, get_one, get_list = results[:4]
        backlog = cancel_backlog(url, keys, redis.Redis(REDIS_HOST, REDIS_PORT, db=redis_db))
        worker = start_process([sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker",
                        "--queues", "cpu", "--concurrency", "1", "--loglevel", "WARNING"], env,
                       home / "worker.log")
        processes.append(worker)
        queue_delays(url, keys[0], 1)  # the first job also waits for the worker to boot: not measured
        observed, server = queue_delays(url, keys[0], args.delay_jobs)
    finally:
        stop_all(processes)
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        redis.Redis(REDIS_HOST, REDIS_PORT, db=redis_db).flushdb()

    print(f"\nnarrownet service benchmark: {args.clients} concurrent clients, {args.duration:.0f} s per phase, "
          f"one uvicorn process, PostgreSQL + Redis on loopback, {os.cpu_count()} CPUs (load generator on the "
          f"same machine); GET /v1/jobs pages kept "
          f"{'the default 1' if args.list_cache_seconds is None else f'{args.list_cache_seconds:g}'} s\n")
    print(f"| {'request':<17} | {'ok':>7} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | / healthz "
          "| CPU ms/req: API | PostgreSQL | client | errors |")
    print(f"|{'-' * 19}|{'-' * 9}|{'-' * 10}|{'-' * 9}|{'-' * 9}|----------:|----------------:|-----------:|"
          "-------:|--------|")
    for r in results:
        print(f"| {r.name:<17} | {r.ok:>7} | {r.rate:>8.1f} | {r.pct(0.5):>7.1f} | {r.pct(0.99):>7.1f} | "
              f"{r.rate / health.rate:>9.2f} | {r.cpu_ms_per_request:>15.2f} | "
              f"{1000 * r.db_cpu_s / max(1, r.ok):>10.2f} | {1000 * r.client_cpu_s / max(1, r.ok):>6.2f} | "
              f"{r.errors or '-'} |")
    print(f"\nsubmit / healthz throughput ratio: {submit.rate / health.rate:.3f} (goal >= 0.5)   "
          f"p50 latency ratio: {submit.pct(0.5) / health.pct(0.5):.1f}x   "
          f"p99 latency ratio: {submit.pct(0.99) / health.pct(0.99):.1f}x")
    for what, name in (("submissions per transaction", GROUPINGS[0]), ("polls per read", GROUPINGS[1])):
        made, requests = groups[name]
        print(f"{what} (api/grouping.py): {requests / max(1.0, made):.1f} ({requests:.0f} in {made:.0f})")
    print(f"GET /v1/jobs/{{id}} / healthz: {get_one.rate / health.rate:.3f}, GET /v1/jobs / healthz: "
          f"{get_list.rate / health.rate:.3f} (goal >= 0.7 each)")
    if args.floor:
        floor_submit, floor_list = results[4:]
        print(f"floors (bench/floor_app.py: no database, no broker) / healthz: "
              f"POST {floor_submit.rate / health.rate:.3f}, list of 20 {floor_list.rate / health.rate:.3f}; "
              f"the real requests reach "
              f"{submit.rate / floor_submit.rate:.2f} and {get_list.rate / floor_list.rate:.2f} of their floors")
    print(f"queue delay, idle worker, median of {len(observed)} jobs: 201 -> running observed "
          f"{statistics.median(observed):.0f} ms (min {min(observed):.0f}, max {max(observed):.0f}); "
          f"server started_at - created_at {statistics.median(server):.0f} ms")
    print(f"(cancelled {backlog} queued jobs from the submit phase before starting the worker)")


if __name__ == "__main__":
    main()
