"""Promise 1, continued: SIGKILL of redis-server (its messages are lost: no persistence) or of the API does not
lose an accepted job; a job accepted while the broker is down is sent once it is back."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from sqlalchemy import select

from core.db.models import Job, JobStatus
from narrownet.cluster import RedisServer
from tests.reliability.conftest import Db, client, expected_steps, long_spec

pytestmark = [pytest.mark.service, pytest.mark.slow]


def test_sigkill_of_redis_mid_run_and_a_submit_while_it_is_down_lose_nothing(make_cluster, db: Db, api_key: str,
                                                                              redis_server: RedisServer):
    cluster = make_cluster()
    cluster.start_api(), cluster.start_worker(), cluster.start_reconciler()
    cluster.wait_api(), cluster.wait_worker()
    with client(cluster, api_key) as c:
        running_id = c.submit(long_spec("running"))["id"]
        waiting_id = c.submit(long_spec("waiting"))["id"]  # its message waits in Redis behind the first
        db.wait_checkpoint(running_id)

        redis_server.kill()  # SIGKILL; nothing was persisted, so the waiting job's message is gone
        down_id = c.submit(long_spec("submitted-while-down"))["id"]  # committed, but the send fails
        assert db.job(down_id).status is JobStatus.QUEUED
        redis_server.start()  # same port, empty
        back_at = time.monotonic()

    for job_id in (waiting_id, down_id):
        db.wait_for(job_id, "to be claimed", lambda j: j.attempt >= 1)
    print(f"\nrecovery (redis restarted -> lost messages sent again and claimed): {time.monotonic() - back_at:.2f}s")
    for job_id in (running_id, waiting_id, down_id):
        assert db.wait_terminal(job_id).status is JobStatus.SUCCEEDED
        assert [s for s, _ in db.metric_rows(job_id)] == expected_steps(long_spec())
    assert " resent" in cluster.log_text("reconciler")  # the lost messages came back through the reconciler


def test_sigkill_of_the_api_loses_no_accepted_job_and_a_retried_submit_makes_no_second(make_cluster, db: Db,
                                                                                         api_key: str):
    cluster = make_cluster()
    cluster.start_api(), cluster.start_worker(), cluster.start_reconciler()
    cluster.wait_api(), cluster.wait_worker()
    spec = long_spec("through-api-loss", iterations=4000)
    with client(cluster, api_key) as c:
        accepted = c.submit(spec)["id"]
    # A submit in flight when the API dies: committed or not, the client cannot know; it retries with its key.
    in_flight = threading.Thread(target=_submit_ignoring_errors, args=(cluster.url, api_key, spec, "retry-me"))
    in_flight.start()
    cluster.kill("api")
    in_flight.join()

    cluster.start_api()
    cluster.wait_api()
    with client(cluster, api_key) as c:
        retried = c.submit(spec, idempotency_key="retry-me")["id"]
        for job_id in (accepted, retried):
            assert db.wait_terminal(job_id).status is JobStatus.SUCCEEDED
            assert c.job(job_id)["status"] == "succeeded"
    with db.sessions() as s:
        assert s.scalars(select(Job.id).where(Job.idempotency_key == "retry-me")).all() == [retried]


def _submit_ignoring_errors(url: str, key: str, spec: dict, idempotency_key: str) -> None:
    try:
        httpx.post(f"{url}/v1/jobs", json=spec, timeout=10.0,
                   headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key})
    except httpx.TransportError:
        pass  # the API died under the request
