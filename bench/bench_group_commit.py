"""Group commit (api/grouping.py): a plain submission's transaction alone vs in groups, CPU per submission in this
process and in the PostgreSQL backend, as a ratio to a group of one in the same run.

Each group is the transaction the API runs (api/services/job_writes.py `group_steps`: each owner's lock in id order,
then each capped insert) on an asyncio engine made as the API's write engine is (core.db.session.make_loop_engine),
through core.db.driver_reads.fetch_each_in_transaction. Submissions of 16 owners in turn, one group at a time (no
concurrency: this is the cost of a round trip and its share of it per submission, not a load test; bench_service.py
is that).

Makes a database of its own on 127.0.0.1:5432 (migrated as the service's), drops it at the end. Run:

    .venv/bin/python bench/bench_group_commit.py [--submissions 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.services.job_writes import group_steps  # noqa: E402
from bench.bench_submit_tx import ADMIN_DSN, backend_cpu_seconds, ratio  # noqa: E402
from bench.bench_submit_tx import params as submission  # noqa: E402  # insert_within_cap's, as the API binds them
from core.db.driver_reads import driver_connection, fetch_each_in_transaction  # noqa: E402
from core.db.migrate import upgrade  # noqa: E402
from core.db.session import make_loop_engine  # noqa: E402

SIZES = (1, 2, 4, 8, 16, 32)
OWNERS = 16


async def measure(url: str, submissions: int) -> dict[int, tuple[float, float]]:
    # One pooled connection, so that its backend's CPU is the whole database side.
    engine = make_loop_engine(url, busy_timeout=5, pool_size=1, ping_after_idle_seconds=30, read_only=False,
                              lock_timeout_seconds=5)
    assert engine is not None
    owners = [f"bench-{i:02d}-{secrets.token_hex(3)}" for i in range(OWNERS)]
    async with driver_connection(engine, "", {}) as (driver, _):
        pid = driver.info.backend_pid
        for owner in owners:
            await driver.execute("INSERT INTO api_keys (id, name, key_hash, prefix, created_at) "
                                 "VALUES (%s, %s, %s, %s, now())", (owner, owner, secrets.token_hex(32), owner[:8]))

    async def run(size: int, count: int) -> None:
        for start in range(0, count, size):
            group = [submission(owners[(start + i) % OWNERS]) for i in range(size)]
            steps, locks = group_steps(group)
            rows = await fetch_each_in_transaction(engine, steps)
            assert all(len(found) == 1 for found in rows[locks:])

    async def empty() -> None:  # each measurement counts its owners' queued jobs from 0
        async with driver_connection(engine, "", {}) as (driver, _):
            await driver.execute("DELETE FROM jobs")

    results: dict[int, list[tuple[float, float]]] = {size: [] for size in SIZES}
    for size in SIZES:  # warm: statements prepared on the connection for every shape
        await run(size, size * 3)
    for _ in range(2):  # two rounds, each size in turn
        for size in SIZES:
            await empty()
            count = submissions // size * size
            cpu, backend = time.process_time(), backend_cpu_seconds(pid)
            await run(size, count)
            results[size].append(((time.process_time() - cpu) / count, (backend_cpu_seconds(pid) - backend) / count))
    await engine.dispose()
    return {size: (min(r[0] for r in runs), min(r[1] for r in runs)) for size, runs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=3000, help="per group size and round")
    args = parser.parse_args()
    name = f"narrownet_bench_group_{secrets.token_hex(4)}"
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        upgrade(url)
        figures = asyncio.run(measure(url, args.submissions))
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    base_own, base_backend = figures[1]
    print(f"\nplain submissions in groups (each owner's lock, then each capped insert, one transaction), "
          f"~{args.submissions} per size, best of 2 rounds\n")
    print("| submissions per transaction | this process, us each | / alone | PostgreSQL backend, us each | / alone |")
    print("|---:|---:|---:|---:|---:|")
    for size, (own, backend) in figures.items():
        print(f"| {size} | {own * 1e6:.0f} | {ratio(own, base_own)} | {backend * 1e6:.0f} | "
              f"{ratio(backend, base_backend)} |")


if __name__ == "__main__":
    main()
