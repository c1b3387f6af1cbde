"""Promise 1 in the embedded deployment. `narrownet serve` uses a SQLite-backed broker, which forgets a message
as soon as a worker takes it, so a job whose worker died is brought back only by the reconciler that serve
runs beside the API and the worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from core.db.models import JobStatus
from core.db.session import make_engine
from narrownet.client import NarrownetClient
from narrownet.cluster import pid_of_lease
from narrownet.processes import free_port, stop_gracefully, wait_until
from tests.reliability.conftest import SETTINGS, Db, expected_steps, long_spec

pytestmark = pytest.mark.slow

KEY_LINE = "API key (stored in NARROWNET_HOME/api_key):"


class Serve:
    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")}
        self.env.update({**SETTINGS, "NARROWNET_HOME": str(home), "PYTHONUNBUFFERED": "1"})
        self.process: subprocess.Popen[bytes] | None = None
        self.log = home.parent / "serve.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start `narrownet serve --print-key`; return the key it prints once it is up."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "narrownet", "serve", "--port", str(self.port), "--print-key"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def printed_key() -> str | None:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            return text.split(KEY_LINE)[1].split()[0] if KEY_LINE in text else None

        return wait_until(printed_key, 120, "narrownet serve to print its key")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    served = Serve(tmp_path / "home")
    yield served
    if served.process is not None:
        stop_gracefully(served.process, grace=30.0)


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def test_a_job_whose_embedded_worker_was_sigkilled_finishes_after_serve_restarts(serve: Serve):
    key = serve.start()
    engine = make_engine(f"sqlite:///{serve.home / 'narrownet.db'}")
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
        assert serve.process.wait(timeout=60) == 1  # serve stops when a child dies

        key = serve.start()  # the user starts it again, same home
        job = db.wait_terminal(job_id)
        assert job.status is JobStatus.SUCCEEDED and job.attempt > running.attempt
        assert [s for s, _ in db.metric_rows(job_id)] == expected_steps(spec)
        with NarrownetClient(serve.url, key, timeout=30.0) as c:
            assert c.job(job_id)["status"] == "succeeded"
    finally:
        engine.dispose()
