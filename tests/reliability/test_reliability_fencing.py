"""Promise 2: never two live attempts of one job. A duplicate delivery finds the job leased and exits; an attempt
that was paused past its lease (SIGSTOP) wakes up fenced out and writes nothing more. Also: each pool process
caps its torch threads."""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import text

from core.db.models import JobStatus
from narrownet.cluster import pid_of_lease
from narrownet.processes import wait_until
from tests.reliability.conftest import Db, client, expected_steps, log_count, long_spec, send_duplicate

pytestmark = [pytest.mark.service, pytest.mark.slow]


def test_a_duplicate_delivery_while_the_job_runs_exits_without_writing(make_cluster, db: Db, api_key: str):
    cluster = make_cluster()
    cluster.start_api(), cluster.start_worker(concurrency=2), cluster.start_reconciler()
    cluster.wait_api(), cluster.wait_worker()
    spec = long_spec("delivered-twice")
    with client(cluster, api_key) as c:
        job_id = c.submit(spec)["id"]
    db.wait_checkpoint(job_id)

    send_duplicate(cluster, job_id)  # the second pool process takes it while the first one trains
    wait_until(lambda: log_count(cluster, "worker", f"job {job_id}: nothing to run") == 1, 60,
               "the duplicate to be refused")

    job = db.wait_terminal(job_id)
    assert (job.status, job.attempt) == (JobStatus.SUCCEEDED, 1)
    assert db.metric_rows(job_id) == [(step, 1) for step in expected_steps(spec)]
    assert {attempt for _, attempt in db.checkpoint_rows(job_id)} == {1}


def no_open_transaction(db: Db) -> bool:
    """No other connection is inside a transaction (a paused one would hold its row locks)."""
    with db.sessions() as s:
        return not s.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"))


def test_an_attempt_paused_past_its_lease_is_fenced_out_when_it_wakes(make_cluster, db: Db, api_key: str):
    cluster = make_cluster()
    cluster.start_api(), cluster.start_worker(concurrency=2), cluster.start_reconciler()
    cluster.wait_api(), cluster.wait_worker()
    spec = long_spec("paused", iterations=40_000)
    with client(cluster, api_key) as c:
        job_id = c.submit(spec)["id"]
    first = db.wait_checkpoint(job_id)
    pid = pid_of_lease(first.lease_owner)

    def paused_outside_a_transaction() -> bool:
        os.kill(pid, signal.SIGSTOP)
        if no_open_transaction(db):
            return True
        os.kill(pid, signal.SIGCONT)  # caught mid-write: let it finish and try again
        return False

    wait_until(paused_outside_a_transaction, 30, "a moment to pause the attempt outside a transaction")
    try:
        written_by_first = (db.metric_rows(job_id), db.checkpoint_rows(job_id))
        # Its lease runs out; the reconciler re-queues the job and the other pool process claims it.
        db.wait_for(job_id, "to be claimed by a second attempt", lambda j: j.attempt == 2)
        db.wait_checkpoint(job_id)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: "attempt 1 no longer holds the job" in cluster.log_text("worker"), 60,
               "the woken attempt to find itself fenced out")

    job = db.wait_terminal(job_id)
    assert (job.status, job.attempt) == (JobStatus.SUCCEEDED, 2)
    metrics, checkpoints = db.metric_rows(job_id), db.checkpoint_rows(job_id)
    assert [(s, a) for s, a in metrics if a == 1] == written_by_first[0]  # nothing more from attempt 1
    assert [(s, a) for s, a in checkpoints if a == 1] == written_by_first[1]
    assert [s for s, _ in metrics] == expected_steps(spec)


def test_each_pool_process_shares_out_the_cores_among_torch_threads(make_cluster):
    cluster = make_cluster()
    del cluster.settings["NARROWNET_WORKER_TORCH_THREADS"]  # the default: cores / concurrency
    cluster.start_worker(concurrency=2)
    cluster.wait_worker()

    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    line = f"torch uses {expected} threads (pool of 2)"
    wait_until(lambda: log_count(cluster, "worker", line) == 2, 30, f"both pool processes to log {line!r}")
