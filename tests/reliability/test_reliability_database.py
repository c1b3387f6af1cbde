"""Promise 6: a PostgreSQL restart mid-run. The API answers 503 with Retry-After (never 500) while the
database is down; the worker retries its writes with capped backoff and the same attempt finishes the job.

The database here is a throwaway cluster of our own (initdb + pg_ctl on a free port), never the shared one.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.orm import sessionmaker

from core.db.migrate import upgrade
from core.db.models import JobStatus
from core.db.session import make_engine
from narrownet.cluster import Cluster, PostgresCluster, RedisServer
from narrownet.processes import wait_until
from tests.reliability.conftest import SETTINGS, Db, client, expected_steps, long_spec

pytestmark = [pytest.mark.service, pytest.mark.slow]


def test_a_database_restart_mid_run_is_503_for_clients_and_ridden_out_by_the_worker(
        postgres: PostgresCluster, redis_server: RedisServer, tmp_path):
    url = postgres.create_database("narrownet")
    upgrade(url)
    engine = make_engine(url)
    db = Db(sessionmaker(bind=engine, expire_on_commit=False))
    from api.services.keys import create_key

    with db.sessions.begin() as s:
        _, key = create_key(s, "restart")
    redis_server.flush()
    # A lease longer than the restart takes: the same attempt must carry on, not a re-queued one.
    cluster = Cluster(tmp_path / "home", url, redis_server.url(), {**SETTINGS, "NARROWNET_LEASE_SECONDS": "15"})
    cluster.home.mkdir()
    try:
        cluster.start_api(), cluster.start_worker(), cluster.start_reconciler()
        cluster.wait_api(), cluster.wait_worker()
        spec = long_spec("through-a-restart", iterations=40_000)
        with client(cluster, key) as c:
            job_id = c.submit(spec)["id"]
        db.wait_checkpoint(job_id)

        postgres.stop("fast")
        headers = {"Authorization": f"Bearer {key}"}
        answers = [httpx.get(f"{cluster.url}/v1/jobs/{job_id}", headers=headers, timeout=30.0),
                   httpx.post(f"{cluster.url}/v1/jobs", json=spec, headers=headers, timeout=30.0),
                   httpx.get(f"{cluster.url}/v1/jobs", headers=headers, timeout=30.0),
                   httpx.get(f"{cluster.url}/readyz", timeout=30.0)]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"].isdigit()
        assert {a.json()["error"]["code"] for a in answers[:3]} == {"database_unavailable"}
        # Down long enough for the worker to back off a few times (0.1, 0.2, 0.4, 0.8 s...).
        wait_until(lambda: "database unavailable" in cluster.log_text("worker") and "; retry 4 in" in
                   cluster.log_text("worker"), 60, "the worker to retry through the outage")
        postgres.start()

        job = db.wait_terminal(job_id)
        assert (job.status, job.attempt) == (JobStatus.SUCCEEDED, 1)  # ridden out, not handed on
        assert [s for s, _ in db.metric_rows(job_id)] == expected_steps(spec)
        with client(cluster, key) as c:
            assert c.job(job_id)["status"] == "succeeded"
    finally:
        cluster.stop()
        engine.dispose()
