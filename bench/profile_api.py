"""Where an API request's time goes: cProfile over N requests of one kind, served in this process.

The app (api.app.create_app) runs on a fresh PostgreSQL database and a Redis database of a redis-server of
our own, like bench/bench_service.py; requests go through httpx's ASGI transport, one at a time, so the profile
is the server's own work per request (no network, no contention). Run:

    .venv/bin/python bench/profile_api.py [--requests 300] [--top 30] [--request submit|get|list|healthz]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_embedded_load import create_keys  # noqa: E402
from bench.bench_service import TINY_SPEC  # noqa: E402
from bench.bench_sweeps import postgres_database  # noqa: E402
from core.db.migrate import upgrade  # noqa: E402
from core.settings import Settings  # noqa: E402
from narrownet.cluster import RedisServer  # noqa: E402

# Stages of a request timed by wrapping the function that does each (module, attribute, label).
STAGES = [
    ("api.services.keys", "authenticate_digest", "  key lookup (a cache miss)"),
    ("api.services.key_revocations", "RedisMark.read", "  key revocation mark"),
    ("api.ratelimit", "RedisRateLimiter.ahit_reading", "  rate limiter (and the mark, when both are in one Redis)"),
    ("api.services.jobs", "submit_job", "submit service (resolve, idempotency, reuse, cap, insert)"),
    ("api.services.quota", "insert_within_queued_cap", "  queued cap + insert"),
    ("api.runtime", "enqueue_job", "enqueue to the broker (after commit)"),
    ("api.deps", "_commit", "commit (+ after-commit work)"),
    ("api.services.jobs", "get_job", "get service"),
    ("api.services.jobs", "list_jobs", "list service"),
]


def instrument() -> dict[str, list[float]]:
    import importlib
    import inspect
    import time as _time

    seen: dict[str, list[float]] = {}
    for module_name, path, label in STAGES:
        owner: object = importlib.import_module(module_name)
        *parents, attr = path.split(".")
        for name in parents:  # a method: wrap it on its class
            owner = getattr(owner, name)
        original = getattr(owner, attr)

        if inspect.iscoroutinefunction(original):
            async def wrapped(*a: object, __original=original, __label=label, **kw: object) -> object:  # noqa: ANN001
                t0 = _time.perf_counter()
                try:
                    return await __original(*a, **kw)
                finally:
                    seen.setdefault(__label, []).append(_time.perf_counter() - t0)
        else:
            def wrapped(*a: object, __original=original, __label=label, **kw: object) -> object:  # type: ignore[misc]  # noqa: ANN001
                t0 = _time.perf_counter()
                try:
                    return __original(*a, **kw)
                finally:
                    seen.setdefault(__label, []).append(_time.perf_counter() - t0)

        setattr(owner, attr, wrapped)
    return seen


async def drive(app: object, key: str, kind: str, n: int) -> tuple[float, pstats.Stats]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        job_id = (await client.post("/v1/jobs", json=TINY_SPEC)).json()["id"]
        calls = {
            "healthz": lambda: client.get("/healthz"),
            "submit": lambda: client.post("/v1/jobs", json=TINY_SPEC),
            "get": lambda: client.get(f"/v1/jobs/{job_id}"),
            "list": lambda: client.get("/v1/jobs", params={"limit": 20}),
        }
        call = calls[kind]
        for _ in range(20):  # warm
            (await call()).raise_for_status()
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.enable()
        for _ in range(n):
            (await call()).raise_for_status()
        profiler.disable()
        return (time.perf_counter() - t0) / n, pstats.Stats(profiler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--request", choices=("healthz", "submit", "get", "list"), default="submit")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--stages", action="store_true",
                        help="instead of cProfile (blind to the worker threads): wall time per stage")
    args = parser.parse_args(argv)
    stages = instrument() if args.stages else None
    workdir = Path(tempfile.mkdtemp(prefix="narrownet-profile-api-"))
    redis_server = RedisServer(workdir)
    redis_server.start()
    try:
        with postgres_database() as url:
            upgrade(url)
            key = create_keys(url, 1)[0]
            from api.app import create_app

            settings = Settings(database_url=url, broker_url=redis_server.url(1), home=workdir,
                                rate_limit_per_minute=10**9, max_queued_jobs_per_user=10**9)
            app = create_app(settings)

            async def run() -> tuple[float, pstats.Stats]:
                async with app.router.lifespan_context(app):
                    return await drive(app, key, args.request, args.requests)

            seconds, stats = asyncio.run(run())
    finally:
        redis_server.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.request}: {seconds * 1000:.2f} ms per request under cProfile ({args.requests} requests, "
          "one at a time)")
    if stages is not None:
        total = args.requests + 20 + 1
        print("| stage | ms per request (mean) |\n|---|---:|")
        for _, _, label in STAGES:
            if label in stages:
                print(f"| {label} | {sum(stages[label]) / total * 1000:.2f} |")
    else:
        stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
