"""Reading a long metric series with `?every=` downsampling, on PostgreSQL: time per read and the query plan.

Makes a fresh database with one job of --points metric points (VACUUM ANALYZE afterwards, as autovacuum would),
then times core.repositories.jobs.metric_points (what GET /v1/jobs/{id}/metrics?every=K runs) for a few K, and
prints PostgreSQL's EXPLAIN (ANALYZE, BUFFERS) of the statement it sends. Run:

    .venv/bin/python bench/bench_metrics_read.py [--points 100000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.orm import sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.services.jobs import submit_job  # noqa: E402
from api.services.keys import create_key  # noqa: E402
from bench.bench_service import TINY_SPEC  # noqa: E402
from bench.bench_sweeps import postgres_database  # noqa: E402
from core.db.migrate import upgrade  # noqa: E402
from core.db.models import MetricPoint  # noqa: E402
from core.db.session import make_engine  # noqa: E402
from core.repositories import jobs as repo  # noqa: E402
from core.settings import Settings  # noqa: E402
from trainer.spec import JobSpec  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--every", default="1,10,100,1000")
    args = parser.parse_args(argv)
    with postgres_database() as url:
        upgrade(url)
        engine = make_engine(url)
        sessions = sessionmaker(bind=engine)
        with sessions.begin() as session:
            owner, _ = create_key(session, "metrics")
            job_id = submit_job(session, owner, JobSpec.model_validate(TINY_SPEC), idempotency_key=None,
                                settings=Settings(database_url=url), enqueue=lambda *_: None).job.id
        values = {"train_loss": 0.5, "train_acc": 0.9, "test_loss": 0.6, "test_acc": 0.8, "grad_norm": 1.0}
        with sessions.begin() as session:
            session.execute(MetricPoint.__table__.insert(), [
                {"job_id": job_id, "step": 10 * (i + 1), "values": values, "attempt": 1}
                for i in range(args.points)])
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE metrics"))
        print(f"{args.points} points of one job (and nothing else) on PostgreSQL, "
              f"median of {args.repeat} reads, limit 1000:\n")
        print("| every | points returned | ms per read |\n|---:|---:|---:|")
        for every in (int(e) for e in args.every.split(",")):
            times = []
            for _ in range(args.repeat):
                with sessions() as session:
                    t0 = time.perf_counter()
                    points = repo.metric_points(session, job_id, since_step=None, every=every, limit=1000)
                    times.append((time.perf_counter() - t0) * 1000)
            print(f"| {every} | {len(points)} | {statistics.median(times):.1f} |")
        captured: list[tuple[str, object]] = []

        def capture(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
            captured.append((statement, parameters))

        event.listen(engine, "before_cursor_execute", capture)
        with sessions() as session:
            repo.metric_points(session, job_id, since_step=None, every=100, limit=1000)
        event.remove(engine, "before_cursor_execute", capture)
        statement, parameters = captured[-1]
        with engine.connect() as conn:
            plan = [row[0] for row in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)]
        print("\nThe statement:\n\n" + statement)
        print("\nEXPLAIN (ANALYZE, BUFFERS) of the read with every=100:\n")
        print("\n".join(plan))
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
