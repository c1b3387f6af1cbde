"""Fault injection against real processes (narrownet/cluster.py): a redis-server of our own, a fresh PostgreSQL
database, uvicorn, Celery workers and the reconciler, each killed by pid. Short leases keep recovery quick.

The database and the redis-server are shared by the session; each test starts its own processes and begins
with empty job tables (the reconciler looks at every job, so one test's leftovers would be another's work).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from safetensors.numpy import load_file
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from core.db.migrate import upgrade
from core.db.models import Checkpoint, Job, JobStatus, MetricPoint
from core.db.session import make_engine
from core.queue import enqueue_job, make_celery
from narrownet.client import NarrownetClient
from narrownet.cluster import Cluster, PostgresCluster, RedisServer, postgres_binary
from narrownet.processes import wait_until
from narrownet.s3server import S3Server
from tests.s3 import s3_server  # noqa: F401  # a fixture, shared with tests/worker
from tests.service_guard import require_service, temporary_postgres_database

# Recovery bound in these tests: R = lease + interval = 4.5 s. The lease is not shorter so that a worker
# slowed down by a busy machine still renews it in time.
SETTINGS = {"NARROWNET_LEASE_SECONDS": "4", "NARROWNET_RECONCILE_INTERVAL_SECONDS": "0.5",
            "NARROWNET_MAX_ATTEMPTS": "5", "NARROWNET_METRICS_FLUSH_EVERY": "5",
            # One torch thread per pool process: on a shared 2-core machine more threads only contend.
            "NARROWNET_WORKER_TORCH_THREADS": "1"}
JOB_DEADLINE = 120.0
TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


def long_spec(name: str = "long", iterations: int = 20_000, **extra: Any) -> dict[str, Any]:
    """A CPU job of a few seconds (about 0.1 ms a step) with a checkpoint every tenth of the run."""
    return {"name": name, "regime": "constrained", "model": {"arch": "shallow", "width": 16},
            "data": {"source": "synthetic", "n": 64, "d": 8, "seed": 3}, "device": "cpu", "seed": 11,
            "optim": {"name": "gd", "lr": 0.05, "momentum": 0.9, "iterations": iterations},
            "metrics_every": 250, "checkpoint_every": iterations // 10, **extra}


def expected_steps(spec: dict[str, Any]) -> list[int]:
    return list(range(0, spec["optim"]["iterations"] + 1, spec["metrics_every"]))


@dataclass
class Db:
    """What the tests read straight from the database (the API may be the process that was killed)."""

    sessions: sessionmaker[Session]

    def job(self, job_id: str) -> Job:
        with self.sessions() as s:
            job = s.get(Job, job_id)
            assert job is not None, job_id
            return job

    def metric_rows(self, job_id: str) -> list[tuple[int, int]]:
        """(step, attempt) of every stored metric point, in step order."""
        with self.sessions() as s:
            rows = s.execute(select(MetricPoint.step, MetricPoint.attempt).where(MetricPoint.job_id == job_id)
                             .order_by(MetricPoint.step))
            return [(r.step, r.attempt) for r in rows]

    def duplicated_metric_rows(self) -> int:
        with self.sessions() as s:
            per_step = (select(func.count().label("n")).select_from(MetricPoint)
                        .group_by(MetricPoint.job_id, MetricPoint.step)
                        .subquery())
            return s.scalar(select(func.count()).select_from(per_step).where(per_step.c.n > 1)) or 0

    def checkpoint_rows(self, job_id: str) -> list[tuple[int, int]]:
        """(step, attempt) of every recorded checkpoint, in the order they were recorded."""
        with self.sessions() as s:
            rows = s.execute(select(Checkpoint.step, Checkpoint.attempt).where(Checkpoint.job_id == job_id)
                             .order_by(Checkpoint.id))
            return [(r.step, r.attempt) for r in rows]

    def clear_jobs(self) -> None:
        with self.sessions.begin() as s:
            for table in (MetricPoint, Checkpoint, Job):
                s.execute(delete(table))

    def wait_for(self, job_id: str, what: str, predicate: Callable[[Job], bool],
                 timeout: float = JOB_DEADLINE) -> Job:
        def check() -> Job | None:
            job = self.job(job_id)
            return job if predicate(job) else None

        return wait_until(check, timeout, f"job {job_id} {what}")

    def wait_terminal(self, job_id: str, timeout: float = JOB_DEADLINE) -> Job:
        return self.wait_for(job_id, "to finish", lambda j: j.status in TERMINAL, timeout)

    def wait_checkpoint(self, job_id: str, count: int = 1) -> Job:
        """Wait until the job is running with at least `count` checkpoints recorded by its current attempt."""
        def ready(job: Job) -> bool:
            own = [s for s, a in self.checkpoint_rows(job_id) if a == job.attempt]
            return job.status is JobStatus.RUNNING and len(own) >= count
        return self.wait_for(job_id, f"to record {count} checkpoint(s)", ready)

    def wait_metrics_past_checkpoint(self, job_id: str) -> Job:
        """Wait until the running attempt has stored metric points after its latest checkpoint: the points a
        resumed attempt records a second time."""
        def ready(job: Job) -> bool:
            own = [s for s, a in self.checkpoint_rows(job_id) if a == job.attempt]
            return job.status is JobStatus.RUNNING and bool(own) and self.metric_rows(job_id)[-1][0] > max(own)
        return self.wait_for(job_id, "to store metrics past its latest checkpoint", ready)


@pytest.fixture(scope="session")
def reliability_database() -> Iterator[str]:
    with temporary_postgres_database("narrownet_reliability") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_service("redis-server (the program, to run one of our own)", RedisServer.binary)
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster of our own (initdb + pg_ctl on a free port), to stop and start."""
    require_service("PostgreSQL's server programs (initdb, pg_ctl)",
                    lambda: (postgres_binary("initdb"), postgres_binary("pg_ctl")))
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def db(reliability_database: str) -> Iterator[Db]:
    engine = make_engine(reliability_database)
    db = Db(sessionmaker(bind=engine, expire_on_commit=False))
    db.clear_jobs()
    yield db
    engine.dispose()


@pytest.fixture
def s3_cluster_settings(s3_server: S3Server) -> dict[str, str]:  # noqa: F811  # the imported fixture
    """What every process of a cluster on the S3 store gets: the store's URL (a bucket of this test's own) and
    boto3's standard variables. A process's home is then its own disk, shared with no other."""
    s3_server.start()  # an earlier test may have left it stopped
    bucket = f"narrownet-{time.monotonic_ns()}"
    s3_server.create_bucket(bucket)
    return {"NARROWNET_ARTIFACT_URL": f"s3://{bucket}/artifacts", **s3_server.env()}


ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def make_cluster(tmp_path: Path, reliability_database: str, redis_server: RedisServer,
                 db: Db) -> Iterator[ClusterFactory]:
    """Build a cluster on this session's database and broker; every process it started is stopped after."""
    clusters: list[Cluster] = []

    def make(**settings: str) -> Cluster:
        if redis_server.process is None:
            redis_server.start()  # an earlier test left it killed
        redis_server.flush()
        cluster = Cluster(tmp_path / f"home{len(clusters)}", reliability_database, redis_server.url(),
                          {**SETTINGS, **settings})
        cluster.home.mkdir()
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()


@pytest.fixture
def api_key(db: Db) -> str:
    from api.services.keys import create_key

    with db.sessions.begin() as s:
        _, plaintext = create_key(s, f"reliability-{time.monotonic_ns()}")
    return plaintext


def client(cluster: Cluster, key: str) -> NarrownetClient:
    return NarrownetClient(cluster.url, key, timeout=30.0)


def reconcile_once(cluster: Cluster) -> dict[str, list[str]]:
    """One reconciler pass by the real command (`narrownet reconcile --once`); what it did, by kind."""
    result = subprocess.run([sys.executable, "-m", "narrownet", "reconcile", "--once"], env=cluster.env,
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def send_duplicate(cluster: Cluster, job_id: str, queue: str = "cpu") -> None:
    """Put a second message for the job on the broker, as a redelivery or a double send would."""
    app = make_celery(cluster.broker_url)
    try:
        enqueue_job(app, job_id, queue)
    finally:
        app.close()


def log_count(cluster: Cluster, name: str, text: str) -> int:
    return cluster.log_text(name).count(text)


def assert_resumed_exactly_once_per_step(db: Db, job_id: str, spec: dict, killed_attempt: int) -> None:
    rows = db.metric_rows(job_id)
    assert [step for step, _ in rows] == expected_steps(spec)  # no gap, no duplicate
    assert {a for _, a in rows} >= {killed_attempt, killed_attempt + 1}
    # Resumed, not restarted: the new attempt recorded no checkpoint the killed one had already written.
    checkpoints = db.checkpoint_rows(job_id)
    before = max(s for s, a in checkpoints if a == killed_attempt)
    assert min(s for s, a in checkpoints if a > killed_attempt) > before


def flipped_weight(data: bytes) -> bytes:
    """The safetensors bytes with the lowest bit of the first hidden weight W[0, 0] flipped: the same size and a
    well-formed header, and training from it would end with different weights."""
    data = bytearray(data)
    header_len = int.from_bytes(data[:8], "little")
    start, _ = json.loads(data[8:8 + header_len])["W"]["data_offsets"]
    data[8 + header_len + start] ^= 0x01  # little-endian float32: the mantissa's lowest byte
    return bytes(data)


def final_weights(cluster: Cluster, key: str, job_id: str, dest: Path) -> dict[str, bytes]:
    """The raw bytes of every tensor of the job's latest checkpoint, as the API serves it (sha256 checked).

    Tensors, not the file: safetensors writes its header's metadata map in no fixed order.
    """
    with client(cluster, key) as c:
        c.fetch_checkpoint(job_id, dest)
    return {name: array.dtype.str.encode() + array.tobytes() for name, array in load_file(str(dest)).items()}
