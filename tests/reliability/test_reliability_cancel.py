"""Promise 7: cancel is idempotent and final. Neither a redelivered message nor the reconciler brings back a job
cancelled while queued, while running, or while its worker was dead."""

from __future__ import annotations

import pytest

from core.db.models import JobStatus
from narrownet.cluster import Cluster
from narrownet.processes import wait_until
from tests.reliability.conftest import Db, client, log_count, long_spec, reconcile_once, send_duplicate

pytestmark = [pytest.mark.service, pytest.mark.slow]


def redeliver_and_reconcile(cluster: Cluster, worker: str, job_id: str) -> None:
    """A duplicate message reaches a worker (which refuses it) and the reconciler makes a pass."""
    refused = f"job {job_id}: nothing to run"
    before = log_count(cluster, worker, refused)
    send_duplicate(cluster, job_id)
    wait_until(lambda: log_count(cluster, worker, refused) > before, 60, f"{worker} to refuse job {job_id}")
    assert job_id not in sum(reconcile_once(cluster).values(), [])


def cancel_twice(cluster: Cluster, key: str, job_id: str) -> list[dict]:
    with client(cluster, key) as c:
        return [c.cancel(job_id), c.cancel(job_id)]


def test_cancel_is_idempotent_and_final(make_cluster, db: Db, api_key: str):
    cluster = make_cluster()
    cluster.start_api(), cluster.start_reconciler()
    cluster.wait_api()
    with client(cluster, api_key) as c:
        queued = c.submit(long_spec("cancelled-while-queued"))["id"]
    first, second = cancel_twice(cluster, api_key, queued)
    assert first["status"] == second["status"] == "cancelled" and first["finished_at"] == second["finished_at"]
    cluster.start_worker("worker1", concurrency=2)
    cluster.wait_worker("worker1")
    redeliver_and_reconcile(cluster, "worker1", queued)
    assert (db.job(queued).status, db.job(queued).attempt, db.metric_rows(queued)) == (JobStatus.CANCELLED, 0, [])

    # Cancelled while running: the worker stops it within seconds; a second cancel changes nothing.
    with client(cluster, api_key) as c:
        running = c.submit(long_spec("cancelled-while-running", iterations=400_000))["id"]
    db.wait_checkpoint(running)
    cancel_twice(cluster, api_key, running)
    stopped = db.wait_terminal(running)
    assert (stopped.status, stopped.attempt) == (JobStatus.CANCELLED, 1)
    assert cancel_twice(cluster, api_key, running)[1]["status"] == "cancelled"
    redeliver_and_reconcile(cluster, "worker1", running)

    # Cancelled while its worker was dead: the reconciler ends it cancelled instead of re-queuing it.
    with client(cluster, api_key) as c:
        orphan = c.submit(long_spec("cancelled-while-orphaned", iterations=400_000))["id"]
    db.wait_checkpoint(orphan)
    cluster.kill("worker1")
    answers = cancel_twice(cluster, api_key, orphan)
    assert [a["status"] for a in answers] == ["running", "running"]  # requested; no worker to act on it yet
    metrics_at_kill = db.metric_rows(orphan)
    assert db.wait_terminal(orphan).status is JobStatus.CANCELLED
    cluster.start_worker("worker2")
    cluster.wait_worker("worker2")
    redeliver_and_reconcile(cluster, "worker2", orphan)

    for job_id in (queued, running, orphan):
        assert db.job(job_id).status is JobStatus.CANCELLED
    job = db.job(orphan)
    assert job.attempt == 1 and db.metric_rows(orphan) == metrics_at_kill
