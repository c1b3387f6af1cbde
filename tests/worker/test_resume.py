"""Resuming after a crash keeps the metric series whole: a checkpoint the database never recorded (its worker
died between writing the file, or publishing it to the store, and storing the metrics before it) is not resumed
from, and is deleted from the run directory and from the store."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from core.db.models import Checkpoint, Job, JobStatus, MetricPoint, utcnow
from tests.worker.conftest import tiny_spec
from trainer.loop import Callbacks, train
from trainer.spec import JobSpec
from worker.runner import run_job


class _DiesAfterCheckpointFile(Callbacks):
    """Attempt 1: trains until it has written the checkpoint file at `at`, then 'dies' (stops)."""

    def __init__(self, at: int) -> None:
        self.at, self.points, self.written = at, [], 0

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.points.append((step, metrics))

    def on_checkpoint(self, step, path, meta) -> None:  # type: ignore[no-untyped-def]
        self.written = step

    def should_stop(self) -> bool:
        return self.written >= self.at


def test_a_checkpoint_file_without_its_row_is_not_resumed_from(worker_db):
    spec = tiny_spec()  # metrics every 20 steps, checkpoints every 100
    job_id = worker_db.add_job(spec)
    first = _DiesAfterCheckpointFile(100)
    assert train(JobSpec.model_validate(spec), worker_db.job_dir(job_id), callbacks=first).step >= 100
    assert (worker_db.job_dir(job_id) / "ckpt-000000100.json").exists()
    published = worker_db.publish(job_id, 1, worker_db.job_dir(job_id) / "ckpt-000000100.safetensors")
    # What reached the database before the worker died: the points up to step 60, no checkpoint row.
    with worker_db.sessions.begin() as s:
        s.add_all(MetricPoint(job_id=job_id, step=st, values=v, attempt=1) for st, v in first.points if st <= 60)
        s.execute(update(Job).where(Job.id == job_id).values(
            status=JobStatus.RUNNING, attempt=1, lease_owner="dead", lease_expires_at=utcnow() - timedelta(seconds=1)))

    assert run_job(job_id, worker_id="w2", settings=worker_db.settings, sessions=worker_db.sessions) is (
        JobStatus.SUCCEEDED)

    with worker_db.sessions() as s:
        steps = list(s.scalars(select(MetricPoint.step).where(MetricPoint.job_id == job_id)
                               .order_by(MetricPoint.step)))
        checkpoints = list(s.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job_id)
                                     .order_by(Checkpoint.step)))
    assert steps == list(range(0, 201, 20))  # 80 and 100 included: attempt 2 started over from step 0
    assert checkpoints == [100, 200]
    kept = worker_db.artifacts.keys(f"jobs/{job_id}/")
    assert published not in kept and all("/attempt-2/" in key for key in kept) and kept
