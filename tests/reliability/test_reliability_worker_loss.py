"""Promises 1 and 3: a job answered 201 reaches a final state when its pool process or its whole worker is
SIGKILLed mid-run, resumes from its last checkpoint, ends with the same weights as an uninterrupted run of
the same spec (bitwise, CPU, same seed) and has exactly one metric point per recorded step."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from core.db.models import JobStatus
from narrownet.cluster import pid_of_lease
from tests.reliability.conftest import Db, assert_resumed_exactly_once_per_step, client, final_weights, long_spec

pytestmark = [pytest.mark.service, pytest.mark.slow]


def test_sigkill_of_the_pool_process_mid_run_resumes_to_the_same_weights(make_cluster, db: Db, api_key: str,
                                                                          tmp_path: Path):
    cluster = make_cluster()
    cluster.start_api(), cluster.start_worker(), cluster.start_reconciler()
    cluster.wait_api(), cluster.wait_worker()
    spec = long_spec("killed")
    with client(cluster, api_key) as c:
        job_id = c.submit(spec)["id"]
    db.wait_checkpoint(job_id, count=2)
    running = db.wait_metrics_past_checkpoint(job_id)

    os.kill(pid_of_lease(running.lease_owner), signal.SIGKILL)  # the pool process; celery forks another
    killed_at = time.monotonic()
    db.wait_for(job_id, "to be claimed again", lambda j: j.attempt > running.attempt)
    print(f"\nrecovery (pool process SIGKILL -> claimed again): {time.monotonic() - killed_at:.2f}s")
    assert db.wait_terminal(job_id).status is JobStatus.SUCCEEDED

    with client(cluster, api_key) as c:
        reference_id = c.submit(spec)["id"]  # the same spec, never interrupted
    reference = db.wait_terminal(reference_id)
    assert (reference.status, reference.attempt) == (JobStatus.SUCCEEDED, 1)
    resumed = final_weights(cluster, api_key, job_id, tmp_path / "resumed.safetensors")
    assert resumed == final_weights(cluster, api_key, reference_id, tmp_path / "reference.safetensors")
    assert_resumed_exactly_once_per_step(db, job_id, spec, running.attempt)
    assert db.duplicated_metric_rows() == 0


def test_sigkill_of_the_whole_worker_mid_run_is_recovered_by_another(make_cluster, db: Db, api_key: str):
    cluster = make_cluster()
    cluster.start_api(), cluster.start_worker("worker1"), cluster.start_reconciler()
    cluster.wait_api(), cluster.wait_worker("worker1")
    spec = long_spec("orphaned")
    with client(cluster, api_key) as c:
        job_id = c.submit(spec)["id"]
    running = db.wait_metrics_past_checkpoint(job_id)

    cluster.kill("worker1")  # main process and pool together: its unacked message stays in Redis for an hour
    killed_at = time.monotonic()
    cluster.start_worker("worker2")
    db.wait_for(job_id, "to be claimed again", lambda j: j.attempt > running.attempt)
    print(f"\nrecovery (whole worker SIGKILL -> claimed by a new worker): {time.monotonic() - killed_at:.2f}s")

    assert db.wait_terminal(job_id).status is JobStatus.SUCCEEDED
    assert_resumed_exactly_once_per_step(db, job_id, spec, running.attempt)
