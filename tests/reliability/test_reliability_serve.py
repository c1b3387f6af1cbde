"""Promise 1 in the embedded deployment. `narrownet serve` uses a SQLite-backed broker, which forgets a message
as soon as a worker takes it, so a job whose worker died is brought back only by the reconciler that serve
runs beside the API and the worker."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from core.db.models import JobStatus
from core.db.session import make_engine
from narrownet.client import NarrownetClient
from narrownet.cluster import Serve, pid_of_lease
from tests.reliability.conftest import SETTINGS, Db, expected_steps, long_spec

pytestmark = pytest.mark.slow


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    served = Serve(tmp_path / "home", SETTINGS)
    yield served
    served.stop()


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def test_a_job_whose_embedded_worker_was_sigkilled_finishes_after_serve_restarts(serve: Serve):
    key = serve.start()
    engine = make_engine(serve.database_url)
    db = Db(sessionmaker(bind=engine, expire_on_commit=False))
    spec = long_spec("embedded")
    try:
        with NarrownetClient(serve.url, key, timeout=30.0) as c:
            job_id = c.submit(spec)["id"]
        running = db.wait_checkpoint(job_id)
        pool = pid_of_lease(running.lease_owner)
        main = parent_of(pool)
        for pid in (main, pool):  # the whole celery worker: its message is gone from the SQLite broker
            os.kill(pid, signal.SIGKILL)
        assert serve.process is not None and serve.process.wait(timeout=60) == 1  # serve stops when a child dies

        key = serve.start()  # the user starts it again, same home
        job = db.wait_terminal(job_id)
        assert job.status is JobStatus.SUCCEEDED and job.attempt > running.attempt
        assert [s for s, _ in db.metric_rows(job_id)] == expected_steps(spec)
        with NarrownetClient(serve.url, key, timeout=30.0) as c:
            assert c.job(job_id)["status"] == "succeeded"
    finally:
        engine.dispose()
