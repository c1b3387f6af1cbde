"""Failed attempts (retried up to max_attempts, then failed with the reason) and database retries, against a
real database (SQLite and PostgreSQL) and the real trainer; no Celery here (tests/reliability has it)."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from core.db.models import Job, JobStatus
from core.db.session import make_engine
from narrownet.processes import free_port
from tests.worker.conftest import WorkerDb, tiny_spec
from worker.db_retry import DatabaseUnavailable, with_retries
from worker.runner import run_job


def run(db: WorkerDb, job_id: str) -> JobStatus | None:
    return run_job(job_id, worker_id="w", settings=db.settings, sessions=db.sessions)


def block_job_dir(db: WorkerDb, job_id: str) -> None:
    """A file where the job's directory goes: every attempt fails with an OSError, as on a broken disk."""
    path = db.job_dir(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a directory")


def test_a_job_that_fails_every_time_ends_failed_after_max_attempts_with_the_reason(worker_db):
    job_id = worker_db.add_job(tiny_spec())
    block_job_dir(worker_db, job_id)

    for attempt in (1, 2):
        assert run(worker_db, job_id) is JobStatus.QUEUED
        job = worker_db.job(job_id)
        assert (job.status, job.attempt, job.lease_owner) == (JobStatus.QUEUED, attempt, None)
        assert job.error.startswith(f"attempt {attempt} of 3 failed, will retry: FileExistsError")
    assert run(worker_db, job_id) is JobStatus.FAILED

    job = worker_db.job(job_id)
    assert (job.status, job.attempt) == (JobStatus.FAILED, 3)
    assert job.error.startswith("attempt 3 of 3 failed: FileExistsError") and job.finished_at is not None
    assert run(worker_db, job_id) is None and worker_db.job(job_id).attempt == 3  # no fourth attempt


def test_a_job_that_failed_once_succeeds_on_its_next_attempt_and_forgets_the_error(worker_db):
    job_id = worker_db.add_job(tiny_spec())
    block_job_dir(worker_db, job_id)
    assert run(worker_db, job_id) is JobStatus.QUEUED
    worker_db.job_dir(job_id).unlink()  # the disk is fixed

    assert run(worker_db, job_id) is JobStatus.SUCCEEDED

    job = worker_db.job(job_id)
    assert (job.status, job.attempt, job.error) == (JobStatus.SUCCEEDED, 2, None)


class TestDatabaseRetries:
    def test_an_unreachable_database_is_retried_until_the_budget_then_gives_up(self):
        engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")  # nothing listens
        calls = []

        def write() -> None:
            calls.append(1)
            with sessionmaker(bind=engine)() as s:
                s.connection()

        with pytest.raises(DatabaseUnavailable, match="heartbeat: database unreachable for 0.5s"):
            with_retries(write, what="heartbeat", budget_seconds=0.5)
        assert len(calls) > 1
        engine.dispose()

    def test_a_locked_sqlite_database_is_busy_contention_retried_until_the_lock_is_free(self, tmp_path, caplog):
        path = tmp_path / "locked.db"
        engine = make_engine(f"sqlite:///{path}", busy_timeout=0.1)
        with engine.begin() as c:
            c.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        holder = sqlite3.connect(path, isolation_level=None)  # the API (another process) mid-write
        holder.execute("BEGIN IMMEDIATE")
        calls = []

        def write() -> None:
            calls.append(1)
            if len(calls) == 3:  # the holder commits while the worker backs off
                holder.commit()
            with engine.begin() as c:
                c.exec_driver_sql("INSERT INTO t VALUES (1)")

        with caplog.at_level(logging.WARNING, logger="worker.db_retry"):
            with_retries(write, what="record metrics", budget_seconds=30.0)
        assert len(calls) == 3
        assert "record metrics: database busy (database is locked" in caplog.text
        with engine.connect() as c:
            assert c.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
        holder.close()
        engine.dispose()

    def test_a_statement_the_database_refuses_is_not_retried(self, worker_db):
        calls = []

        def write() -> None:
            calls.append(1)
            with worker_db.sessions.begin() as s:  # no such owner: a foreign key violation, not an outage
                s.execute(insert(Job).values(id="x" * 32, owner_id="nobody", name="n", regime="regular",
                                             spec={}, queue="cpu"))

        with pytest.raises(IntegrityError):
            with_retries(write, what="insert", budget_seconds=5.0)
        assert calls == [1]
