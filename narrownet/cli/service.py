"""The service's own processes: serve (embedded), worker, reconcile, and the database schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from core.settings import get_settings
from narrownet.cli.common import fail, out

app = typer.Typer()
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic migrations).")


def _sqlite_parent(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///")).parent if url.startswith("sqlite:///") else Path(".")


def upgrade_embedded() -> None:
    """Embedded mode makes its own schema (production runs `narrownet db upgrade` once, from the API)."""
    from core.db.migrate import upgrade

    settings = get_settings()
    if settings.run_migrations_on_start:
        _sqlite_parent(settings.resolved_database_url).mkdir(parents=True, exist_ok=True)
        upgrade(settings.resolved_database_url)


@db_app.command("upgrade")
def db_upgrade(
    wait: Annotated[float, typer.Option(min=0, help="seconds to wait for the database to accept connections")] = 0,
) -> None:
    """Bring the database schema to the latest migration."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from core.db.migrate import upgrade, wait_for_database

    url = get_settings().resolved_database_url
    _sqlite_parent(url).mkdir(parents=True, exist_ok=True)
    if wait:
        try:
            wait_for_database(url, wait)
        except OperationalError as exc:
            where = make_url(url).render_as_string(hide_password=True)
            reason = str(exc.orig).strip().splitlines()[0]
            raise fail(f"the database at {where} did not accept connections within {wait:g}s: {reason}") from None
    upgrade(url)
    out.print("database schema is up to date")


@db_app.command("pack-series")
def db_pack_series(
    min_points: Annotated[int | None, typer.Option(min=0, help=(
        "pack jobs with at least this many points (default: NARROWNET_SERIES_PACK_MIN_POINTS)"))] = None,
) -> None:
    """Pack the metric series of finished jobs that have none (they finished before packing existed, or with fewer
    points than the threshold then), so that charts of them read a row per job. Safe to run beside the service."""
    from sqlalchemy.orm import sessionmaker

    from core.db.session import make_engine
    from core.repositories.series import store_series, unpacked_finished

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url, busy_timeout=settings.database_busy_timeout_seconds)
    sessions = sessionmaker(bind=engine)
    least = settings.series_pack_min_points if min_points is None else min_points
    packed, after = 0, ""
    try:
        while True:
            with sessions() as session:
                batch = unpacked_finished(session, min_points=least, after=after, limit=100)
            for job_id in batch:
                with sessions.begin() as session:  # one job a transaction: a short hold on SQLite's write lock
                    store_series(session, job_id)
                packed += 1
            if len(batch) < 100:
                break
            after = batch[-1]
    finally:
        engine.dispose()
    out.print(f"packed the series of {packed} finished job(s) with at least {least} points")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    print_key: Annotated[bool, typer.Option("--print-key", help="print a key and a curl example")] = False,
) -> None:
    """Run the service: the API, one worker and the reconciler, state under NARROWNET_HOME (SQLite, unless
    configured). Their logs go to NARROWNET_HOME/serve.log."""
    from narrownet.serve import embedded_key, run_embedded

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.resolved_artifact_dir.mkdir(parents=True, exist_ok=True)
    upgrade_embedded()
    key = embedded_key(settings) if print_key else None
    raise typer.Exit(run_embedded(settings, host=host, port=port, key=key))


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="comma-separated: cpu, gpu")] = "cpu",
    concurrency: Annotated[int | None, typer.Option(min=1, help="parallel jobs")] = None,
) -> None:
    """Run a Celery worker that trains jobs from the given queues."""
    from core.queue import QUEUES
    from worker.celery_app import celery_app

    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if not names or unknown:
        raise fail(f"--queues: unknown queue(s) {unknown or queues!r}; choose from {', '.join(QUEUES)}", code=2)
    settings = get_settings()
    concurrency = concurrency or settings.worker_concurrency
    if "gpu" in names and concurrency != 1:
        raise fail("--concurrency: a gpu worker runs one job per GPU; start one worker per GPU", code=2)
    hostname = f"narrownet-{'-'.join(names)}@%h"
    celery_app.worker_main(["worker", "--queues", ",".join(names), "--concurrency", str(concurrency),
                            "--loglevel", settings.log_level, "--hostname", hostname])


@app.command()
def reconcile(once: Annotated[bool, typer.Option("--once", help="one pass, print what it did, exit")] = False,
              ) -> None:
    """Hand orphaned jobs back to their queue (a worker died, a message was lost); keep one running."""
    import logging
    import signal
    import threading

    from core.db.session import get_sessionmaker, name_connections
    from core.queue import enqueue_job, enqueue_pack, make_celery
    from worker.reconciler import reconcile_once, run_reconciler

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name_connections("narrownet-reconciler")
    producer = make_celery(settings.resolved_broker_url, busy_timeout=settings.database_busy_timeout_seconds)

    def enqueue(job_id: str, queue: str) -> None:
        enqueue_job(producer, job_id, queue)

    def send_pack(job_ids: list[str], queue: str) -> None:
        enqueue_pack(producer, job_ids, queue)

    if once:
        report = reconcile_once(get_sessionmaker(), lease_seconds=settings.lease_seconds,
                                max_attempts=settings.max_attempts, enqueue=enqueue, enqueue_pack=send_pack)
        print(json.dumps(vars(report)))
        return
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    run_reconciler(get_sessionmaker(), lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts,
                   interval_seconds=settings.reconcile_interval_seconds, enqueue=enqueue, stop=stop,
                   enqueue_pack=send_pack)
