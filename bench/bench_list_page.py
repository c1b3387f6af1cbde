"""A page of GET /v1/jobs for an owner with many jobs, on PostgreSQL: the page statement the service runs (its total
an uncorrelated count subquery, core.repositories.jobs.list_owned) against the window count it replaced
(count(*) OVER (), which makes the page read every matching row before its LIMIT), in the same run, on the same
connection, with the same rows and totals asserted.

Makes a database of its own on 127.0.0.1:5432 with one owner of --jobs jobs (one in ten queued), VACUUM ANALYZE,
then the median of --repeat reads of the first page (limit 20), unfiltered and filtered by status. Run:

    .venv/bin/python bench/bench_list_page.py [--jobs 100000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import functools
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, select, text
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.services.keys import create_key  # noqa: E402
from bench.bench_dashboard import median_ms  # noqa: E402
from bench.bench_service import TINY_SPEC  # noqa: E402
from bench.bench_sweeps import postgres_database  # noqa: E402
from core.db.migrate import upgrade  # noqa: E402
from core.db.models import Job, JobStatus, new_id, utcnow  # noqa: E402
from core.db.session import make_engine  # noqa: E402
from core.db.statements import core_table  # noqa: E402
from core.repositories import jobs as repo  # noqa: E402

LIMIT = 20


@functools.lru_cache(maxsize=8)  # built once, as the service's statements are
def window_page(names: tuple[str, ...]) -> Select[Any]:
    """The page statement as it was before: the same WHERE and order, the total a window count."""
    table = core_table(Job)
    return (select(*table.c, func.count().over().label("total"))
            .where(table.c.owner_id == bindparam("owner_id"), *(table.c[name] == bindparam(name) for name in names))
            .order_by(table.c.created_at.desc(), table.c.id.desc())
            .limit(bindparam("limit")).offset(bindparam("offset")))


def read_before(session: Session, owner_id: str, filters: repo.JobFilters) -> tuple[list[str], int]:
    _, _, params = repo.owned_page_query(owner_id, filters)
    statement = window_page(tuple(name for name in params if name != "owner_id"))
    rows = session.execute(statement, {**params, "limit": LIMIT, "offset": 0}).all()
    return [row.id for row in rows], int(rows[0].total)


def read_now(session: Session, owner_id: str, filters: repo.JobFilters) -> tuple[list[str], int]:
    rows, total = repo.list_owned(session, owner_id, filters, limit=LIMIT, offset=0)
    return [row["id"] for row in rows], total


def fill(connection: Connection, owner_id: str, jobs: int) -> None:
    now = utcnow()
    rows = [{"id": new_id(), "owner_id": owner_id, "name": "bench", "regime": "constrained", "spec": TINY_SPEC,
             "queue": "cpu", "status": JobStatus.QUEUED if i % 10 == 0 else JobStatus.SUCCEEDED, "attempt": 1,
             "cancel_requested": False, "step": 10, "total_steps": 10,
             "created_at": now - timedelta(seconds=i), "updated_at": now} for i in range(jobs)]
    for start in range(0, jobs, 10_000):
        connection.execute(core_table(Job).insert(), rows[start:start + 10_000])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    with postgres_database() as url:
        upgrade(url)
        engine = make_engine(url)
        with Session(engine) as session, session.begin():
            owner, _ = create_key(session, "lists")
            owner_id = owner.id
            fill(session.connection(), owner_id, args.jobs)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE jobs"))
        print(f"one owner of {args.jobs} jobs on PostgreSQL, the first page (limit {LIMIT}), "
              f"median of {args.repeat} reads\n")
        print("| filter | window count (before), ms | count subquery (now), ms | now / before |")
        print("|---|---:|---:|---:|")
        filters = {"none": repo.JobFilters(), "status=queued": repo.JobFilters(status=JobStatus.QUEUED)}
        with Session(engine) as session:
            for label, given in filters.items():
                before, now = functools.partial(read_before, session, owner_id, given), functools.partial(
                    read_now, session, owner_id, given)
                assert before() == now(), label  # the same page and total
                old, new = median_ms(before, args.repeat), median_ms(now, args.repeat)
                print(f"| {label} | {old:.2f} | {new:.2f} | {new / old:.2f} |")
                session.rollback()
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
