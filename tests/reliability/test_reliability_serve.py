"""Promise 1 in the embedded deployment: `narrownet serve` (SQLite database, SQLite-backed broker, which forgets
a message as soon as a worker takes it) runs the reconciler too, so a SIGKILLed pool process loses no job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from api.db.models import JobStatus
from api.db.session import make_engine
from bench.cluster import free_port, pid_of_lease, stop_gracefully, wait_until
from narrownet.client import NarrownetClient
from tests.reliability.conftest import SETTINGS, Db, expected_steps, long_spec

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")}
    env.update({**SETTINGS, "NARROWNET_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"})
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "narrownet", "serve", "--port", str(port), "--print-key"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: process.poll() is not None or "API key (stored in" in log.read_text(), 120,
                   "narrownet serve to print its key")
        assert process.poll() is None, log.read_text()[-3000:]
        key = log.read_text().split("API key (stored in NARROWNET_HOME/api_key):")[1].split()[0]
        yield process, f"http://127.0.0.1:{port}", key, tmp_path / "home"
    finally:
        stop_gracefully(process, grace=30.0)


def test_serve_recovers_a_job_whose_pool_process_was_sigkilled(served):
    process, url, key, home = served
    engine = make_engine(f"sqlite:///{home / 'narrownet.db'}")
    db = Db(sessionmaker(bind=engine, expire_on_commit=False))
    spec = long_spec("embedded")
    try:
        with NarrownetClient(url, key, timeout=30.0) as c:
            job_id = c.submit(spec)["id"]
            running = db.wait_checkpoint(job_id)
            os.kill(pid_of_lease(running.lease_owner), signal.SIGKILL)

            job = db.wait_terminal(job_id)
            assert job.status is JobStatus.SUCCEEDED and job.attempt > running.attempt
            assert [s for s, _ in db.metric_rows(job_id)] == expected_steps(spec)
            assert c.job(job_id)["status"] == "succeeded"
        assert process.poll() is None  # serve carried on: celery replaced its pool process
    finally:
        engine.dispose()
