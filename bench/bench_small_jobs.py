"""Small jobs through the queue (issue 13): the same N tiny trainings along four paths, side by side in one run.

  plain       a Python loop calling trainer.loop.train in this process
  celery      a bare Celery app (acks_late, prefetch 1, like ours) on the same Redis, one worker of concurrency 1,
              whose task calls train in-process
  pg+redis    narrownet on PostgreSQL + Redis: real uvicorn, one real Celery worker of concurrency 1
  embedded    narrownet's embedded default: `narrownet serve` (SQLite database, SQLite broker)

Every path first runs one job that is not measured (imports, the pool child's first run), then gets all N jobs
at once (narrownet: N POSTs from one client, the worker already running). jobs/s = N / (last finish - first
start), from the times each job recorded itself (narrownet: started_at/finished_at of the job rows); the gap is
the median time between two consecutive job starts. Run:

    .venv/bin/python bench/bench_small_jobs.py [--jobs 50] [--rounds 2] [--only plain,celery,pg+redis,embedded]
                                               [--json out]
    .venv/bin/python bench/bench_small_jobs.py --quick     # 3 jobs, tiny: what tests/bench runs
    .venv/bin/python bench/bench_small_jobs.py --idle-cpu 20  # CPU of an idle `narrownet serve` (all processes)

Redis is a redis-server of our own on a free port; PostgreSQL is a fresh database on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_embedded_load import create_keys  # noqa: E402
from bench.bench_sweeps import postgres_database  # noqa: E402
from core.db.migrate import upgrade  # noqa: E402
from narrownet.cluster import Cluster, RedisServer, Serve  # noqa: E402
from narrownet.processes import start_process, stop_all, wait_until  # noqa: E402

# ~0.05 s of training on one core: the cost of everything around it is what this measures.
SMALL_SPEC: dict[str, Any] = {
    "name": "small", "regime": "constrained", "model": {"arch": "shallow", "width": 20},
    "data": {"source": "synthetic", "n": 100, "d": 10, "seed": 0}, "device": "cpu",
    "optim": {"name": "gd", "lr": 0.1, "iterations": 200}, "metrics_every": 100,
}
QUICK_SPEC: dict[str, Any] = {**SMALL_SPEC, "model": {"arch": "shallow", "width": 4},
                              "data": {"source": "synthetic", "n": 8, "d": 2, "seed": 0},
                              "optim": {"name": "gd", "lr": 0.1, "iterations": 10}, "metrics_every": 5}
PATHS = ("plain", "celery", "pg+redis", "embedded")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
JOB_DEADLINE_SECONDS = 300.0

# The bare Celery path: this module is also the worker's app (`celery -A bench.bench_small_jobs:bare_app`).
BARE_BROKER_ENV = "BENCH_BARE_BROKER_URL"
TIMES_KEY = "bench:small-jobs:times"


@dataclass
class PathResult:
    path: str
    jobs: int
    seconds: float  # last finish - first start
    median_gap_s: float | None  # between consecutive starts; None for the plain loop (no queue)
    median_job_s: float  # start to finish of one job, as the job recorded them
    statuses: dict[str, int]

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else float("nan")


def summarize(path: str, spans: list[tuple[float, float]], statuses: dict[str, int],
              gaps: bool = True) -> PathResult:
    """spans: (start, finish) of each job, any clock shared by all of them."""
    starts = sorted(s for s, _ in spans)
    seconds = max(f for _, f in spans) - starts[0]
    gap = statistics.median(b - a for a, b in itertools.pairwise(starts)) if gaps and len(starts) > 1 else None
    job = statistics.median(f - s for s, f in spans)
    return PathResult(path, len(spans), seconds, gap, job, statuses)


# ---- plain loop -------------------------------------------------------------------------------------------

def run_plain(n: int, spec: dict[str, Any], workdir: Path) -> PathResult:
    from trainer.loop import train
    from trainer.spec import JobSpec

    job_spec = JobSpec.model_validate(spec)
    train(job_spec, workdir / "plain-warmup")
    spans = []
    for i in range(n):
        t0 = time.time()
        train(job_spec, workdir / f"plain-{i}")
        spans.append((t0, time.time()))
    return summarize("plain", spans, {"succeeded": n}, gaps=False)


# ---- bare Celery ------------------------------------------------------------------------------------------

def _make_bare_app() -> Any:
    from celery import Celery

    app = Celery("bench_bare", broker=os.environ.get(BARE_BROKER_ENV, "memory://"))
    app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
                    task_ignore_result=True, task_serializer="json", accept_content=["json"],
                    worker_send_task_events=False)

    @app.task(name="bench.small_job")
    def small_job(spec: dict[str, Any], out_dir: str, record: bool) -> None:
        import redis

        from trainer.loop import train
        from trainer.spec import JobSpec

        t0 = time.time()
        train(JobSpec.model_validate(spec), Path(out_dir))
        if record:
            redis.Redis.from_url(app.conf.broker_url).rpush(TIMES_KEY, json.dumps([t0, time.time()]))

    return app


bare_app = _make_bare_app()


def run_bare_celery(n: int, spec: dict[str, Any], workdir: Path, redis_url: str) -> PathResult:
    import redis

    client = redis.Redis.from_url(redis_url)
    env = {**os.environ, BARE_BROKER_ENV: redis_url, "PYTHONUNBUFFERED": "1"}
    log = workdir / "bare-celery.log"
    worker = start_process([sys.executable, "-m", "celery", "-A", "bench.bench_small_jobs:bare_app", "worker",
                            "--concurrency", "1", "--loglevel", "INFO", "--without-heartbeat", "--without-gossip",
                            "--without-mingle", "--hostname", f"bare-{secrets.token_hex(3)}@%h"], env, log)
    try:
        wait_until(lambda: worker.poll() is not None or "ready." in log.read_text(errors="replace"), 120,
                   "the bare Celery worker")
        bare_app.conf.broker_url = redis_url
        sig = bare_app.signature("bench.small_job")
        # The warm-up also records, so that we know when the worker has reached the measured jobs.
        sig.clone(args=(spec, str(workdir / "bare-warmup"), True)).apply_async()
        wait_until(lambda: client.llen(TIMES_KEY) >= 1, JOB_DEADLINE_SECONDS, "the warm-up job")
        client.delete(TIMES_KEY)
        for i in range(n):
            sig.clone(args=(spec, str(workdir / f"bare-{i}"), True)).apply_async()
        wait_until(lambda: client.llen(TIMES_KEY) >= n, JOB_DEADLINE_SECONDS, f"{n} bare Celery jobs")
        spans = [tuple(json.loads(x)) for x in client.lrange(TIMES_KEY, 0, -1)]
    finally:
        stop_all([worker])
    return summarize("celery", spans, {"succeeded": n})  # type: ignore[arg-type]


# ---- narrownet ---------------------------------------------------------------------------------------------

def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_jobs_through_api(path: str, url: str, key: str, n: int, spec: dict[str, Any]) -> PathResult:
    """One warm-up job, then N submitted back to back; wait for all; read their own start and finish times."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        def submit() -> str:
            response = client.post("/v1/jobs", json=spec)
            response.raise_for_status()
            return str(response.json()["id"])

        def wait(ids: list[str]) -> list[dict[str, Any]]:
            done: dict[str, dict[str, Any]] = {}

            def all_done() -> bool:
                for job_id in ids:
                    if job_id not in done:
                        job = client.get(f"/v1/jobs/{job_id}").json()
                        if job["status"] not in TERMINAL:
                            return False
                        done[job_id] = job
                return True

            wait_until(all_done, JOB_DEADLINE_SECONDS, f"{len(ids)} jobs on {path}", poll=0.1)
            return [done[i] for i in ids]

        wait([submit()])
        jobs = wait([submit() for _ in range(n)])
    statuses: dict[str, int] = {}
    for job in jobs:
        statuses[job["status"]] = statuses.get(job["status"], 0) + 1
    spans = [(_parse_time(j["started_at"]), _parse_time(j["finished_at"])) for j in jobs if j["started_at"]]
    return summarize(path, spans, statuses)


def run_pg_redis(n: int, spec: dict[str, Any], workdir: Path, redis_url: str) -> PathResult:
    with postgres_database() as database_url:
        upgrade(database_url)
        key = create_keys(database_url, 1)[0]
        cluster = Cluster(workdir / "pg-home", database_url, redis_url, {"NARROWNET_LOG_LEVEL": "WARNING"})
        cluster.home.mkdir()
        try:
            cluster.start_api()
            cluster.start_worker(concurrency=1)
            cluster.wait_api()
            cluster.wait_worker()
            return run_jobs_through_api("pg+redis", cluster.url, key, n, spec)
        finally:
            cluster.stop()


def run_embedded(n: int, spec: dict[str, Any], workdir: Path) -> PathResult:
    serve = Serve(workdir / "embedded-home", {"NARROWNET_LOG_LEVEL": "WARNING"})
    key = serve.start()
    try:
        return run_jobs_through_api("embedded", serve.url, key, n, spec)
    finally:
        serve.stop()


def process_tree_cpu_seconds(root: int) -> float:
    """user + system CPU seconds of `root` and every process under it, from /proc (Linux)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime

    def under_root(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parents.get(pid, 0)
        return False

    return sum(t for pid, t in ticks.items() if under_root(pid)) / os.sysconf("SC_CLK_TCK")


def idle_serve(seconds: float, pickups: int = 3, settle: float = 5.0) -> tuple[float, list[float]]:
    """An idle `narrownet serve` (API, worker, reconciler): the CPU it uses, as a fraction of one core, over
    `seconds`; then, `pickups` times, one job submitted after 3 s of idleness, and its started_at - created_at."""
    workdir = Path(tempfile.mkdtemp(prefix="narrownet-idle-"))
    serve = Serve(workdir / "home", {"NARROWNET_LOG_LEVEL": "WARNING"})
    key = serve.start()
    try:
        assert serve.process is not None
        time.sleep(settle)  # past startup and the worker's first polls
        before, t0 = process_tree_cpu_seconds(serve.process.pid), time.monotonic()
        time.sleep(seconds)
        cpu = (process_tree_cpu_seconds(serve.process.pid) - before) / (time.monotonic() - t0)
        delays = []
        with httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            for _ in range(pickups):
                time.sleep(3.0)  # idle long enough for the worker's polls to back off to their longest
                job_id = client.post("/v1/jobs", json=QUICK_SPEC).json()["id"]

                def finished(job_id: str = job_id) -> dict[str, Any] | None:
                    job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
                    return job if job["status"] in TERMINAL else None

                job = wait_until(finished, JOB_DEADLINE_SECONDS, f"job {job_id}", poll=0.05)
                delays.append(_parse_time(job["started_at"]) - _parse_time(job["created_at"]))
        return cpu, delays
    finally:
        serve.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# ---- the run -----------------------------------------------------------------------------------------------

def run(n: int, spec: dict[str, Any], only: tuple[str, ...] = PATHS, rounds: int = 1) -> dict[str, PathResult]:
    """Every path in `only`, `rounds` times (every other round in reverse order); the best round of each path."""
    workdir = Path(tempfile.mkdtemp(prefix="narrownet-small-jobs-"))
    results: dict[str, PathResult] = {}
    redis_server = RedisServer(workdir) if {"celery", "pg+redis"} & set(only) else None
    try:
        if redis_server is not None:
            redis_server.start()
        # Each run in a directory of its own: a run directory holding a finished checkpoint would resume, not train.
        steps: dict[str, Callable[[Path], PathResult]] = {
            "plain": lambda d: run_plain(n, spec, d),
            "celery": lambda d: run_bare_celery(n, spec, d, redis_server.url(1)),  # type: ignore[union-attr]
            "pg+redis": lambda d: run_pg_redis(n, spec, d, redis_server.url(2)),  # type: ignore[union-attr]
            "embedded": lambda d: run_embedded(n, spec, d),
        }
        order = [p for p in PATHS if p in only]
        for round_ in range(rounds):
            for path in order if round_ % 2 == 0 else order[::-1]:
                result = steps[path](Path(tempfile.mkdtemp(dir=workdir, prefix=f"{path}-")))
                print(f"  round {round_ + 1}, {path}: {result.jobs_per_s:.1f} jobs/s", file=sys.stderr, flush=True)
                if path not in results or result.jobs_per_s > results[path].jobs_per_s:
                    results[path] = result
    finally:
        if redis_server is not None:
            redis_server.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def ratios(results: dict[str, PathResult]) -> dict[str, float]:
    def ratio(a: str, b: str) -> float | None:
        return results[a].jobs_per_s / results[b].jobs_per_s if a in results and b in results else None

    pairs = {"embedded / pg+redis": ratio("embedded", "pg+redis"), "pg+redis / celery": ratio("pg+redis", "celery"),
             "celery / plain": ratio("celery", "plain")}
    return {k: v for k, v in pairs.items() if v is not None}


def report(results: dict[str, PathResult], n: int, rounds: int = 1) -> str:
    lines = [f"{n} small jobs, one worker of concurrency 1, {os.cpu_count()} CPUs, best of {rounds} round(s)", "",
             "| path | jobs/s | median gap between job starts | median job (start to finish) | statuses |",
             "|---|---:|---:|---:|---|"]
    for r in results.values():
        gap = "-" if r.median_gap_s is None else f"{r.median_gap_s:.3f} s"
        lines.append(f"| {r.path} | {r.jobs_per_s:.1f} | {gap} | {r.median_job_s:.3f} s | {r.statuses} |")
    lines.append("")
    lines += [f"{name}: {value:.2f}" for name, value in ratios(results).items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--only", default=",".join(PATHS), help=f"comma-separated subset of {','.join(PATHS)}")
    parser.add_argument("--quick", action="store_true", help="3 tiny jobs per path: checks that it runs")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every path this many times, alternating the order; report the best of each "
                             "(a shared machine's load only ever slows a round down)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--idle-cpu", type=float, metavar="SECONDS",
                        help="instead: the CPU an idle `narrownet serve` uses over SECONDS, then how soon a job "
                        "sent to it after an idle spell starts")
    args = parser.parse_args(argv)
    if args.idle_cpu:
        cpu, delays = idle_serve(args.idle_cpu)
        print(f"idle narrownet serve over {args.idle_cpu:g} s: {cpu * 100:.2f}% of one core (API, worker, reconciler)")
        print("one job submitted after 3 s idle, started_at - created_at: "
              + ", ".join(f"{d * 1000:.0f} ms" for d in delays))
        return 0
    only = tuple(p.strip() for p in args.only.split(",") if p.strip())
    unknown = set(only) - set(PATHS)
    if unknown:
        parser.error(f"--only: unknown path(s) {sorted(unknown)}; expected some of {PATHS}")
    n, spec = (3, QUICK_SPEC) if args.quick else (args.jobs, SMALL_SPEC)
    results = run(n, spec, only, args.rounds)
    print(report(results, n, args.rounds))
    if args.json:
        figures = {"jobs": n, "paths": {k: {**asdict(v), "jobs_per_s": v.jobs_per_s} for k, v in results.items()},
                   "ratios": ratios(results)}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    bad = {k: r.statuses for k, r in results.items() if set(r.statuses) != {"succeeded"}}
    if bad:
        print(f"jobs that did not succeed: {bad}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
