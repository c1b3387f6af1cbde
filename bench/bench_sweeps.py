"""Sweeps through the service: the paper's 7 x 7 learning-rate grid as one sweep vs as 49 jobs vs the local command.

    .venv/bin/python bench/bench_sweeps.py [--backend embedded|postgres|both] [--threads 1] [--iterations 2000]
                                           [--json bench/results/sweeps.json]

The grid: 49 configs (lr_W, lr_v in the paper's 1e-4 .. 5e-1), constrained regime, n=1000, d=20, m=100, r=5,
full-batch GD with momentum 0.9, 2,000 steps (lr_W = lr_v = 0.5 diverges: it ends `failed` on every path, and
counts as finished). For each backend (embedded: SQLite database + SQLite broker;
postgres: a fresh PostgreSQL database + a redis-server of its own) the benchmark starts uvicorn, one Celery
worker (concurrency 1) and the reconciler on loopback, then measures, from the first POST until every config
succeeded (polled every 0.1 s):
  1. sweep: one POST /v1/sweeps;
  2. jobs:  49 POST /v1/jobs, one per config (the same specs);
and once, the baseline: `narrownet sweep FILE` (the same sweep file trained by the local command, process start
included). Goals (issue 9): jobs / sweep >= 5x and local / sweep >= 0.8 (service overhead <= 20%).
Every process gets the same torch threads (--threads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from narrownet.client import TERMINAL, NarrownetClient  # noqa: E402
from narrownet.cluster import Cluster, RedisServer  # noqa: E402
from trainer.grid import SweepFile, expand  # noqa: E402

PAPER_LRS = [1e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1, 5e-1]
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
POLL = 0.1


def sweep_file(iterations: int, name: str = "bench-7x7") -> dict[str, Any]:
    base = {"name": name, "regime": "constrained", "model": {"arch": "shallow", "width": 100},
            "data": {"source": "synthetic", "n": 1000, "d": 20, "seed": 0}, "device": "cpu",
            "optim": {"name": "gd", "momentum": 0.9, "lr": 0.1, "iterations": iterations},
            "constraint": {"radius": 5.0}}
    return {"name": name, "base": base, "grid": {"optim.lr_hidden": PAPER_LRS, "optim.lr_outer": PAPER_LRS},
            "objective": {"metric": "train_loss", "mode": "min"}}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wait_all(api: NarrownetClient, job_ids: list[str], timeout: float = 3600) -> tuple[float, list[dict[str, Any]]]:
    """Poll until every job has finished; return when it saw that, and the jobs."""
    deadline = time.monotonic() + timeout
    pending = list(job_ids)
    while pending:
        # Jobs mostly finish in order: ask about the first unfinished one each round, then move on.
        while pending and api.job(pending[0])["status"] in TERMINAL:
            pending.pop(0)
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} jobs unfinished")
            time.sleep(POLL)
    return time.perf_counter(), [api.job(i) for i in job_ids]


def outcomes(statuses: list[str]) -> dict[str, int]:
    return {s: statuses.count(s) for s in sorted(set(statuses))}


def timings(jobs: list[dict[str, Any]]) -> dict[str, float]:
    """Server-side: queue wait (created -> started) and training (started -> finished), per job."""
    waits = [(parse_time(j["started_at"]) - parse_time(j["created_at"])).total_seconds() for j in jobs]
    runs = [(parse_time(j["finished_at"]) - parse_time(j["started_at"])).total_seconds() for j in jobs]
    return {"queue_wait_median_s": statistics.median(waits), "queue_wait_max_s": max(waits),
            "run_median_s": statistics.median(runs), "run_sum_s": sum(runs),
            "outcomes": outcomes([j["status"] for j in jobs])}


def run_sweep(api: NarrownetClient, body: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    sweep = api.submit_sweep(body)
    end, jobs = wait_all(api, sweep["job_ids"])
    return {"wall_s": end - start, "packs": [len(p["job_ids"]) for p in sweep["packs"]], **timings(jobs)}


def run_jobs(api: NarrownetClient, body: dict[str, Any]) -> dict[str, Any]:
    specs = [c.spec.model_dump(mode="json") for c in expand(SweepFile.model_validate(body))]
    start = time.perf_counter()
    ids = [api.submit(spec)["id"] for spec in specs]
    submitted = time.perf_counter() - start
    end, jobs = wait_all(api, ids)
    return {"wall_s": end - start, "submit_s": submitted, **timings(jobs)}


def run_local(body: dict[str, Any], threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.json"
        path.write_text(json.dumps(body))
        env = {k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")}
        env["OMP_NUM_THREADS"] = str(threads)
        start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "narrownet"), "sweep", str(path), "-o",
                        str(Path(tmp) / "out.json")], check=True, env=env, capture_output=True, timeout=3600)
        wall = time.perf_counter() - start
        rows = json.loads((Path(tmp) / "out.json").read_text())["items"]
    return {"wall_s": wall, "outcomes": outcomes([r["status"] for r in rows])}


@contextmanager
def backend(name: str, home: Path, threads: int) -> Iterator[tuple[Cluster, str]]:
    """A cluster (API, one worker, reconciler) on the backend; yields it and an API key."""
    from sqlalchemy.orm import sessionmaker

    from api.services.keys import create_key
    from core.db.migrate import upgrade
    from core.db.session import make_engine

    with ExitStack() as cleanup:
        if name == "embedded":
            database, broker = f"sqlite:///{home / 'narrownet.db'}", f"sqla+sqlite:///{home / 'broker.db'}"
        else:
            database = cleanup.enter_context(postgres_database())
            redis_server = RedisServer(home)  # our own, on a free port: nothing shared with other runs
            redis_server.start()
            cleanup.callback(redis_server.kill)
            broker = redis_server.url()
        upgrade(database)
        engine = make_engine(database)
        with sessionmaker(bind=engine).begin() as session:
            _, key = create_key(session, "bench")
        engine.dispose()
        cluster = Cluster(home, database, broker, {"NARROWNET_WORKER_TORCH_THREADS": str(threads),
                                                   "NARROWNET_LOG_LEVEL": "WARNING"})
        cleanup.callback(cluster.stop)
        cluster.start_api(), cluster.start_worker(), cluster.start_reconciler()
        cluster.wait_api(), cluster.wait_worker()
        yield cluster, key


@contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    name = f"narrownet_bench_sweeps_{secrets.token_hex(4)}"
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["embedded", "postgres", "both"], default="both")
    # One thread by default: on the shared 2-core machine, 2 OpenMP threads that lose their core to other processes
    # spin-wait, and a 200-step sweep took 42 s instead of 2.2 s (bench/RESULTS.md).
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the worker and the local command")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    body = sweep_file(args.iterations)

    print(f"local `narrownet sweep` ({args.threads} torch threads) ...", flush=True)
    local = run_local(body, args.threads)
    print(f"  {local['wall_s']:.1f} s", flush=True)
    report: dict[str, Any] = {"command": "python bench/bench_sweeps.py " + " ".join(sys.argv[1:]),
                              "threads": args.threads, "iterations": args.iterations, "machine": platform.machine(),
                              "local": local, "backends": {}}
    for name in (["embedded", "postgres"] if args.backend == "both" else [args.backend]):
        with tempfile.TemporaryDirectory(prefix=f"bench-sweeps-{name}-") as tmp, \
                backend(name, Path(tmp), args.threads) as (cluster, key):
            with NarrownetClient(cluster.url, key, timeout=60) as api:
                print(f"{name}: one sweep ...", flush=True)
                sweep = run_sweep(api, body)
                print(f"  {sweep['wall_s']:.1f} s; {name}: 49 jobs ...", flush=True)
                jobs = run_jobs(api, body)
                print(f"  {jobs['wall_s']:.1f} s", flush=True)
        report["backends"][name] = {"sweep": sweep, "jobs": jobs,
                                    "jobs_over_sweep": jobs["wall_s"] / sweep["wall_s"],
                                    "local_over_sweep": local["wall_s"] / sweep["wall_s"]}

    print(f"\noutcomes: local {local['outcomes']}, " + ", ".join(
        f"{n} sweep {r['sweep']['outcomes']} jobs {r['jobs']['outcomes']}" for n, r in report["backends"].items()))
    print(f"49-config 7x7 grid, {args.iterations} steps, {args.threads} torch thread(s); wall time from the first "
          "POST until all succeeded")
    print("| backend | one sweep (s) | 49 jobs (s) | jobs / sweep (goal >= 5) | local `narrownet sweep` (s) "
          "| local / sweep (goal >= 0.8) | sweep: queue wait, training (s) | 49 jobs: median queue wait, "
          "training sum (s) |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for name, r in report["backends"].items():
        s, j = r["sweep"], r["jobs"]
        print(f"| {name} | {s['wall_s']:.1f} | {j['wall_s']:.1f} | {r['jobs_over_sweep']:.2f}x | {local['wall_s']:.1f} "
              f"| {r['local_over_sweep']:.2f} | {s['queue_wait_max_s']:.2f}, {s['run_median_s']:.1f} "
              f"| {j['queue_wait_median_s']:.2f}, {j['run_sum_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
