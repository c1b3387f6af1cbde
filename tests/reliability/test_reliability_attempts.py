"""Promise 5: a job that fails every time ends `failed` after max_attempts with the reason, and stays there:
one whose worker is SIGKILLed each time it claims the job, and one whose every attempt raises."""

from __future__ import annotations

import os
import re
import signal

import pytest

from core.db.models import JobStatus
from narrownet.cluster import pid_of_lease
from narrownet.processes import wait_until
from tests.reliability.conftest import Db, client, log_count, long_spec, reconcile_once, send_duplicate

pytestmark = [pytest.mark.service, pytest.mark.slow]


def test_a_job_that_fails_every_time_ends_failed_after_max_attempts_and_stays_failed(make_cluster, db: Db,
                                                                                       api_key: str):
    cluster = make_cluster(NARROWNET_MAX_ATTEMPTS="2")
    cluster.start_api(), cluster.start_reconciler()
    cluster.wait_api()
    with client(cluster, api_key) as c:
        dies = c.submit(long_spec("worker-dies-each-time"))["id"]
        raises = c.submit(long_spec("raises-each-time", iterations=2000))["id"]
    # A file where the job's directory goes: every attempt fails with an OSError, as on a broken disk.
    blocked = cluster.home / "artifacts" / "jobs" / raises
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a directory")
    cluster.start_worker(concurrency=2)

    for attempt in (1, 2):
        job = db.wait_for(dies, f"attempt {attempt} to run", lambda j, n=attempt: j.attempt == n and
                          j.status is JobStatus.RUNNING and j.lease_owner is not None)
        os.kill(pid_of_lease(job.lease_owner), signal.SIGKILL)

    gave_up = db.wait_terminal(dies)
    assert (gave_up.status, gave_up.attempt, gave_up.error) == (
        JobStatus.FAILED, 2, "gave up after 2 attempts (worker lost each time)")
    failed = db.wait_terminal(raises)
    assert (failed.status, failed.attempt) == (JobStatus.FAILED, 2)
    # Which OSError depends on the call that meets the file first (makedirs: FileExistsError; mkdir under it:
    # NotADirectoryError).
    assert re.match(r"attempt 2 of 2 failed: (FileExistsError|NotADirectoryError)", failed.error), failed.error
    # No loop: a redelivered message and another reconciler pass change nothing.
    refused = f"job {dies}: nothing to run"
    before = log_count(cluster, "worker", refused)
    send_duplicate(cluster, dies)
    wait_until(lambda: log_count(cluster, "worker", refused) > before, 60, "the redelivery to be refused")
    assert not any(reconcile_once(cluster).values())
    for job_id in (dies, raises):
        assert (db.job(job_id).status, db.job(job_id).attempt) == (JobStatus.FAILED, 2)
