"""A plain submission's transaction four ways on the driver: CPU per transaction, in this process and in the
PostgreSQL backend that serves it, as a ratio to psycopg's pipeline mode in the same run.

The transaction is what api/services/job_writes.py runs: the owner's queue lock (LOCK_OWNER), then the capped
INSERT ... SELECT ... RETURNING (insert_within_cap), then COMMIT.

    pipeline     psycopg's pipeline mode: BEGIN, the two statements and COMMIT sent without waiting (extended
                 protocol; psycopg prepares a statement after 5 uses)
    sequential   the same, one round trip each
    client-side  one query string "BEGIN; ...; ...; COMMIT", values bound by psycopg's client-side binding
    prepared     the same with server-side prepared statements: "BEGIN; EXECUTE ...; EXECUTE ...; COMMIT"
                 (what core.db.driver_reads.fetch_dicts_in_transaction does)

Makes a database of its own on 127.0.0.1:5432 (migrated as the service's), drops it at the end. Run:

    .venv/bin/python bench/bench_submit_tx.py [--transactions 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

from core.db.driver_reads import compiled_sql
from core.db.migrate import upgrade
from core.db.models import new_id, utcnow
from core.repositories.jobs import LOCK_OWNER, insert_within_cap

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
SPEC = json.dumps({"name": "bench", "regime": "constrained", "model": {"arch": "shallow", "width": 8},
                   "data": {"source": "synthetic", "n": 16, "d": 4, "labels": "random", "seed": 0},
                   "optim": {"name": "gd", "lr": 0.1, "iterations": 10}, "metrics_every": 10})


def params(owner: str) -> dict[str, Any]:
    now = utcnow()
    return {"id": new_id(), "owner_id": owner, "name": "bench", "regime": "constrained", "spec": SPEC,
            "queue": "cpu", "status": "queued", "idempotency_key": None, "request_hash": "a" * 64,
            "spec_hash": "b" * 64, "total_steps": 10, "attempt": 0, "step": 0, "cancel_requested": False,
            "created_at": now, "updated_at": now, "queued": "queued", "cap": 10**9}


def ratio(value: float, base: float) -> str:
    """value / base for a table cell; "-" where the baseline read 0, as a backend's CPU does on a short run that
    stays under one clock tick (/proc counts in 10 ms ticks)."""
    return f"{value / base:.2f}" if base > 0 else "-"


def backend_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(dsn: str, transactions: int) -> dict[str, tuple[float, float]]:
    dialect = psycopg_dialect.dialect()
    lock, insert = compiled_sql(LOCK_OWNER, dialect), compiled_sql(insert_within_cap(False), dialect)
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    pid = conn.info.backend_pid

    async def pipeline(owner: str) -> list[dict[str, Any]]:
        first, second = conn.cursor(row_factory=dict_row), conn.cursor(row_factory=dict_row)
        async with conn.pipeline(), conn.transaction():
            await first.execute(lock, {"owner_id": owner})
            await second.execute(insert, params(owner))
        return await second.fetchall()

    async def sequential(owner: str) -> list[dict[str, Any]]:
        first, second = conn.cursor(row_factory=dict_row), conn.cursor(row_factory=dict_row)
        async with conn.transaction():
            await first.execute(lock, {"owner_id": owner})
            await second.execute(insert, params(owner))
            return await second.fetchall()

    async def client_side(owner: str) -> list[dict[str, Any]]:
        cursor = psycopg.AsyncClientCursor(conn, row_factory=dict_row)
        await cursor.execute(f"BEGIN;{lock};{insert};COMMIT", params(owner))
        cursor.nextset()
        cursor.nextset()
        return await cursor.fetchall()

    numbered = asyncpg_dialect.dialect()  # $n placeholders, each parameter once, as PREPARE wants them
    lock_prepared, insert_prepared = LOCK_OWNER.compile(dialect=numbered), insert_within_cap(False).compile(
        dialect=numbered)
    await conn.execute(f"PREPARE bench_lock AS {lock_prepared}")
    await conn.execute(f"PREPARE bench_insert AS {insert_prepared}")
    execute = (f"BEGIN;EXECUTE bench_lock(%(owner_id)s);"
               f"EXECUTE bench_insert({', '.join(f'%({n})s' for n in insert_prepared.positiontup or ())});COMMIT")

    async def prepared(owner: str) -> list[dict[str, Any]]:
        cursor = psycopg.AsyncClientCursor(conn, row_factory=dict_row)
        await cursor.execute(execute, params(owner))
        cursor.nextset()
        cursor.nextset()
        return await cursor.fetchall()

    ways: dict[str, Callable[[str], Awaitable[list[dict[str, Any]]]]] = {
        "pipeline": pipeline, "sequential": sequential, "client-side": client_side, "prepared": prepared}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(2):  # two rounds, alternating, each way on an owner (and a count) of its own
        for name, way in ways.items():
            owner = f"bench-{name}-{secrets.token_hex(3)}"
            await conn.execute("INSERT INTO api_keys (id, name, key_hash, prefix, created_at) "
                               "VALUES (%s, %s, %s, %s, now())", (owner, owner, secrets.token_hex(32), owner[:8]))
            for _ in range(100):  # warm: psycopg prepares after 5 uses
                assert (await way(owner))[0]["status"] == "queued"
            await conn.execute("DELETE FROM jobs WHERE owner_id = %s", (owner,))  # the count starts from 0
            cpu, backend = time.process_time(), backend_cpu_seconds(pid)
            for _ in range(transactions):
                await way(owner)
            results[name].append(((time.process_time() - cpu) / transactions,
                                  (backend_cpu_seconds(pid) - backend) / transactions))
    await conn.close()
    return {name: (min(r[0] for r in runs), min(r[1] for r in runs)) for name, runs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=3000)
    args = parser.parse_args()
    name = f"narrownet_bench_tx_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        upgrade(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        figures = asyncio.run(measure(f"host=127.0.0.1 port=5432 user=postgres dbname={name}", args.transactions))
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    base_own, base_backend = figures["pipeline"]
    print(f"\none plain submission's transaction (lock + capped insert + commit), {args.transactions} per way, "
          "best of 2 rounds\n")
    print("| way | this process, us | / pipeline | PostgreSQL backend, us | / pipeline | both, us | / pipeline |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for way, (own, backend) in figures.items():
        print(f"| {way} | {own * 1e6:.0f} | {ratio(own, base_own)} | {backend * 1e6:.0f} | "
              f"{ratio(backend, base_backend)} | {(own + backend) * 1e6:.0f} | "
              f"{ratio(own + backend, base_own + base_backend)} |")


if __name__ == "__main__":
    main()
