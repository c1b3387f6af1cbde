"""run_job against a real database (SQLite and PostgreSQL) and the real trainer; no Celery here."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import torch
from sqlalchemy import select, update

from core.db.models import Checkpoint, Job, JobStatus, MetricPoint, MetricSeries, utcnow
from core.repositories import jobs as jobs_repo
from tests.trainer.stop_after import StopAfter
from tests.worker.conftest import WorkerDb, tiny_spec
from trainer.checkpoint import sha256_file
from trainer.data import load_data
from trainer.loop import train
from trainer.spec import JobSpec
from worker.job_store import LeaseLost
from worker.runner import run_job, use_job_threads


def run(db: WorkerDb, job_id: str, worker_id: str = "w1") -> JobStatus | None:
    return run_job(job_id, worker_id=worker_id, settings=db.settings, sessions=db.sessions)


def metric_rows(db: WorkerDb, job_id: str) -> list[MetricPoint]:
    with db.sessions() as s:
        query = select(MetricPoint).where(MetricPoint.job_id == job_id).order_by(MetricPoint.step)
        return list(s.scalars(query))


def assert_series_packed_from_points(db: WorkerDb, job_id: str) -> None:
    """The job's finish packed, per metric, exactly the numbers its points hold (core/repositories/series.py)."""
    expected: dict[str, tuple[list[int], list[float]]] = {}
    for point in metric_rows(db, job_id):
        for name, value in point.values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                steps, values = expected.setdefault(name, ([], []))
                steps.append(point.step)
                values.append(float(value))
    with db.sessions() as s:
        rows = s.scalars(select(MetricSeries).where(MetricSeries.job_id == job_id))
        packed = {row.metric: (np.frombuffer(row.steps, dtype="<i8").tolist(),
                               np.frombuffer(row.values, dtype="<f8").tolist()) for row in rows}
    assert "train_loss" in packed and packed == expected


def checkpoint_rows(db: WorkerDb, job_id: str) -> list[Checkpoint]:
    with db.sessions() as s:
        return list(s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.id)))


def set_job(db: WorkerDb, job_id: str, **values: Any) -> None:
    with db.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class TestOutcomes:
    def test_queued_job_succeeds_with_every_metric_once_and_a_verified_final_checkpoint(self, worker_db):
        job_id = worker_db.add_job(tiny_spec())

        assert run(worker_db, job_id) is JobStatus.SUCCEEDED

        job = worker_db.job(job_id)
        assert (job.status, job.attempt, job.step, job.total_steps) == (JobStatus.SUCCEEDED, 1, 200, 200)
        assert job.lease_owner is None and job.finished_at is not None and job.error is None
        points = metric_rows(worker_db, job_id)
        assert [p.step for p in points] == list(range(0, 201, 20))
        assert {p.attempt for p in points} == {1}
        assert job.final_metrics["train_loss"] == pytest.approx(points[-1].values["train_loss"])
        assert job.latest_metrics == points[-1].values
        assert points[-1].values["train_loss"] < points[0].values["train_loss"]
        assert_series_packed_from_points(worker_db, job_id)

        finals = [c for c in checkpoint_rows(worker_db, job_id) if c.final]
        assert len(finals) == 1 and finals[0].step == 200
        # Trained in the local run directory, published to the store under a key of the attempt.
        assert finals[0].relpath == f"jobs/{job_id}/attempt-1/ckpt-000000200.safetensors"
        path = worker_db.settings.resolved_artifact_dir / finals[0].relpath
        assert hashlib.sha256(path.read_bytes()).hexdigest() == finals[0].sha256
        assert finals[0].size_bytes == path.stat().st_size
        assert (worker_db.job_dir(job_id) / "ckpt-000000200.safetensors").read_bytes() == path.read_bytes()

    def test_diverging_job_fails_with_the_reason(self, worker_db):
        spec = tiny_spec(regime="regular", model={"arch": "shallow", "width": 8, "activation": "relu"},
                         optim={"name": "gd", "lr": 100.0, "momentum": 0.9, "iterations": 200},
                         metrics_every=1)
        job_id = worker_db.add_job(spec)

        assert run(worker_db, job_id) is JobStatus.FAILED

        job = worker_db.job(job_id)
        assert job.status is JobStatus.FAILED and job.lease_owner is None and job.finished_at is not None
        assert job.error.startswith("TrainingDiverged: training diverged at step")
        assert_series_packed_from_points(worker_db, job_id)  # a failed run's curve is charted too

    def test_dataset_of_another_owner_fails_without_touching_its_file(self, worker_db):
        job_id = worker_db.add_job(tiny_spec(data={"source": "dataset", "id": "0" * 32}))

        assert run(worker_db, job_id) is JobStatus.FAILED

        assert worker_db.job(job_id).error == f"LookupError: data.id: dataset {'0' * 32} not found"
        assert metric_rows(worker_db, job_id) == []

    def test_cancel_while_running_stops_within_seconds_and_keeps_the_last_checkpoint(self, worker_db):
        # Enough iterations that the job is still running when the cancel arrives.
        spec = tiny_spec(optim={"name": "gd", "lr": 0.01, "iterations": 5_000_000}, metrics_every=500,
                         checkpoint_every=None)
        job_id = worker_db.add_job(spec)
        outcome: list[JobStatus | None] = []
        thread = threading.Thread(target=lambda: outcome.append(run(worker_db, job_id)), daemon=True)
        thread.start()
        wait_for(lambda: worker_db.job(job_id).step > 0, 60, "the job to report progress")

        set_job(worker_db, job_id, cancel_requested=True)
        thread.join(timeout=60)

        assert outcome == [JobStatus.CANCELLED]
        job = worker_db.job(job_id)
        assert job.status is JobStatus.CANCELLED and 0 < job.step < 5_000_000
        (last,) = [c for c in checkpoint_rows(worker_db, job_id) if c.step == job.step]
        path = worker_db.settings.resolved_artifact_dir / last.relpath
        assert hashlib.sha256(path.read_bytes()).hexdigest() == last.sha256
        assert_series_packed_from_points(worker_db, job_id)


class TestClaims:
    def test_finished_and_live_leased_jobs_are_left_alone(self, worker_db):
        done = worker_db.add_job(tiny_spec())
        assert run(worker_db, done) is JobStatus.SUCCEEDED
        n_points = len(metric_rows(worker_db, done))
        leased = worker_db.add_job(tiny_spec(), status=JobStatus.RUNNING, attempt=1, lease_owner="other",
                                   lease_expires_at=utcnow() + timedelta(minutes=5))

        assert run(worker_db, done, worker_id="w2") is None
        assert run(worker_db, leased, worker_id="w2") is None

        assert worker_db.job(done).attempt == 1 and len(metric_rows(worker_db, done)) == n_points
        job = worker_db.job(leased)
        assert (job.status, job.attempt, job.lease_owner) == (JobStatus.RUNNING, 1, "other")
        assert metric_rows(worker_db, leased) == []

    def test_cancel_requested_while_queued_ends_cancelled_without_running(self, worker_db):
        job_id = worker_db.add_job(tiny_spec(), cancel_requested=True)

        assert run(worker_db, job_id) is None

        job = worker_db.job(job_id)
        assert (job.status, job.attempt) == (JobStatus.CANCELLED, 0)
        assert metric_rows(worker_db, job_id) == [] and not worker_db.job_dir(job_id).exists()

    def test_job_whose_attempts_all_died_fails_instead_of_looping(self, worker_db):
        job_id = worker_db.add_job(tiny_spec(), status=JobStatus.RUNNING, attempt=3, lease_owner="dead",
                                   lease_expires_at=utcnow() - timedelta(seconds=1))

        assert run(worker_db, job_id) is None

        job = worker_db.job(job_id)
        assert job.status is JobStatus.FAILED and job.attempt == 3
        assert job.error == "gave up after 3 attempts (worker lost each time)"

    def test_a_stale_attempt_is_fenced_out(self, worker_db):
        job_id = worker_db.add_job(tiny_spec())
        claim = dict(lease_seconds=30.0, max_attempts=3)
        with worker_db.sessions.begin() as s:
            first = jobs_repo.claim(s, job_id, worker_id="a", **claim)
        with worker_db.sessions.begin() as s:
            assert jobs_repo.claim(s, job_id, worker_id="b", **claim) is None  # lease still live
        set_job(worker_db, job_id, lease_expires_at=utcnow() - timedelta(seconds=1))
        with worker_db.sessions.begin() as s:
            second = jobs_repo.claim(s, job_id, worker_id="b", **claim)
        assert (first.attempt, second.attempt) == (1, 2)
        stale, live = worker_db.job_store(first), worker_db.job_store(second)

        with pytest.raises(LeaseLost):
            stale.record_metrics([(0, {"train_loss": 1.0})], total_steps=200)
        with pytest.raises(LeaseLost):
            stale.finish(JobStatus.SUCCEEDED)
        with pytest.raises(LeaseLost):
            stale.heartbeat()
        assert live.heartbeat() is False
        live.record_metrics([(0, {"train_loss": 2.0, "nan_metric": math.nan})], total_steps=200)

        job = worker_db.job(job_id)
        assert (job.status, job.attempt, job.lease_owner) == (JobStatus.RUNNING, 2, "b")
        (point,) = metric_rows(worker_db, job_id)
        assert (point.attempt, point.values) == (2, {"train_loss": 2.0, "nan_metric": None})


@pytest.mark.parametrize("host", ["same host", "another host"])
def test_expired_lease_is_reclaimed_and_resumes_from_the_last_checkpoint(worker_db, host, tmp_path):
    spec = tiny_spec()
    job_id = worker_db.add_job(spec)
    # Attempt 1, for real: the trainer writes its checkpoint at step 100 into the job's directory, the worker
    # publishes it; its metrics and then the checkpoint's row reached the database; then its worker vanished,
    # leaving a lease that runs out. On another host, attempt 2 finds nothing local and fetches it.
    first = StopAfter(100)
    result = train(JobSpec.model_validate(spec), worker_db.job_dir(job_id), callbacks=first)
    assert result.step == 100
    key = worker_db.publish(job_id, 1, result.checkpoint)
    settings = worker_db.settings if host == "same host" else worker_db.settings_with(work_dir=tmp_path / "other")
    set_job(worker_db, job_id, status=JobStatus.RUNNING, attempt=1, lease_owner="dead", step=100,
            lease_expires_at=utcnow() - timedelta(seconds=1))
    with worker_db.sessions.begin() as s:
        s.add_all(MetricPoint(job_id=job_id, step=st, values=v, attempt=1) for st, v in first.points)
        s.add(Checkpoint(job_id=job_id, step=100, attempt=1, sha256=sha256_file(result.checkpoint),
                         size_bytes=result.checkpoint.stat().st_size, relpath=key))

    assert run_job(job_id, worker_id="w2", settings=settings, sessions=worker_db.sessions) is JobStatus.SUCCEEDED

    job = worker_db.job(job_id)
    assert (job.status, job.attempt, job.step) == (JobStatus.SUCCEEDED, 2, 200)
    points = metric_rows(worker_db, job_id)
    assert [p.step for p in points] == list(range(0, 201, 20))
    assert {p.step for p in points if p.attempt == 2} == set(range(120, 201, 20))
    # Resumed, not restarted: attempt 2 wrote no checkpoint before step 200.
    assert [c.step for c in checkpoint_rows(worker_db, job_id) if c.attempt == 2] == [200]
    assert_series_packed_from_points(worker_db, job_id)  # both attempts' points, once each


class TestThreads:
    """A pool process may use its share of the cores; a job whose steps are small takes one (trainer/threads.py)."""

    @pytest.fixture(autouse=True)
    def _keep_torch_threads(self):  # type: ignore[no-untyped-def]
        before = torch.get_num_threads()
        yield
        torch.set_num_threads(before)

    def test_a_small_job_trains_on_one_thread_whatever_its_pool_process_may_use(self, worker_db):
        job_id = worker_db.add_job(tiny_spec())
        torch.set_num_threads(2)

        assert run_job(job_id, worker_id="w1", settings=worker_db.settings, sessions=worker_db.sessions,
                       thread_cap=2) is JobStatus.SUCCEEDED
        assert torch.get_num_threads() == 1

    def test_a_big_step_gets_every_thread_of_the_pool_process_and_no_cap_leaves_torch_alone(self, worker_db):
        big = JobSpec.model_validate(tiny_spec(model={"arch": "shallow", "width": 1000},
                                               data={"source": "synthetic", "n": 1000, "d": 10, "seed": 1}))
        use_job_threads(3, big, load_data(big.data))
        assert torch.get_num_threads() == 3

        job_id = worker_db.add_job(tiny_spec())
        assert run(worker_db, job_id) is JobStatus.SUCCEEDED  # no thread_cap: the worker's setting fixed it
        assert torch.get_num_threads() == 3
