"""A worker whose only link to the API's files is an S3 store (moto's server on loopback): it publishes every
checkpoint there before recording it, resumes on any host from the last recorded one, keeps one local copy of
each dataset, refuses what does not verify, and rides out a store outage like a database outage."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select, update

from core.artifacts.keys import dataset_key
from core.db.models import Checkpoint, Dataset, Job, JobStatus, MetricPoint, utcnow
from tests.s3 import Bucket, s3_bucket, s3_server
from tests.trainer.stop_after import StopAfter
from tests.worker.conftest import WorkerDb, dataset_spec, tiny_spec
from trainer.checkpoint import sha256_file
from trainer.loop import train
from trainer.spec import JobSpec
from worker.runner import run_job

__all__ = ["s3_bucket", "s3_server"]  # fixtures


def host(db: WorkerDb, bucket: Bucket, tmp_path: Path, name: str, **changes: object):  # type: ignore[no-untyped-def]
    """The settings of a worker host: the shared store, a local disk of its own."""
    return db.settings_with(artifact_url=bucket.url, work_dir=tmp_path / name, **changes)


def run_on(db: WorkerDb, settings, job_id: str) -> JobStatus | None:  # type: ignore[no-untyped-def]
    return run_job(job_id, worker_id=f"w-{time.monotonic_ns()}", settings=settings, sessions=db.sessions)


def checkpoint_rows(db: WorkerDb, job_id: str) -> list[Checkpoint]:
    with db.sessions() as s:
        return list(s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.id)))


def upload(db: WorkerDb, bucket: Bucket, owner_id: str, tmp_path: Path) -> tuple[str, bytes]:
    """What POST /v1/datasets leaves behind: the object in the store and its row."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, X=rng.normal(size=(24, 4)).astype(np.float32), y=rng.normal(size=24).astype(np.float32))
    data = buffer.getvalue()
    with db.sessions.begin() as s:
        row = Dataset(owner_id=owner_id, name="d", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
                      n_train=24, n_test=0, input_shape={"train": [24, 4], "test": None}, task="regression")
        s.add(row)
        s.flush()
        dataset_id = row.id
    bucket.write(dataset_key(dataset_id), data)
    return dataset_id, data


def test_checkpoints_are_published_per_attempt_and_pruned_like_the_run_directory(worker_db, s3_bucket, tmp_path):
    job_id = worker_db.add_job(tiny_spec(optim={"name": "gd", "lr": 0.1, "iterations": 400}))
    assert run_on(worker_db, host(worker_db, s3_bucket, tmp_path, "a"), job_id) is JobStatus.SUCCEEDED

    rows = checkpoint_rows(worker_db, job_id)
    assert [(r.step, r.final) for r in rows] == [(100, False), (200, False), (300, False), (400, True)]
    stored = [k.removeprefix(f"{s3_bucket.prefix}/") for k in s3_bucket.object_keys()]
    # The newest two recorded checkpoints stay in the store (weights and metadata), as in the run directory.
    assert stored == sorted(f"jobs/{job_id}/attempt-1/ckpt-{step:09d}{suffix}"
                            for step in (300, 400) for suffix in (".json", ".safetensors"))
    final = rows[-1]
    assert hashlib.sha256(s3_bucket.read(final.relpath)).hexdigest() == final.sha256
    assert not (worker_db.settings.resolved_artifact_dir / "jobs" / job_id).exists()  # nothing local was shared


def _first_attempt_died_after_step_100(db: WorkerDb, bucket: Bucket, tmp_path: Path) -> tuple[str, str]:
    """Attempt 1 trained on host a, published and recorded its checkpoint at step 100, then its host vanished."""
    spec = tiny_spec()
    job_id = db.add_job(spec)
    settings = host(db, bucket, tmp_path, "a")
    run_dir = settings.resolved_work_dir / "jobs" / job_id
    first = StopAfter(100)
    result = train(JobSpec.model_validate(spec), run_dir, callbacks=first)
    from core.artifacts.s3 import S3Store
    from worker.job_artifacts import JobArtifacts

    key = JobArtifacts(S3Store.from_url(bucket.url), settings.resolved_work_dir, job_id, 1).publish(
        100, result.checkpoint)
    with db.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == job_id).values(
            status=JobStatus.RUNNING, attempt=1, lease_owner="dead", step=100,
            lease_expires_at=utcnow() - timedelta(seconds=1)))
        s.add_all(MetricPoint(job_id=job_id, step=st, values=v, attempt=1) for st, v in first.points)
        s.add(Checkpoint(job_id=job_id, step=100, attempt=1, sha256=sha256_file(result.checkpoint),
                         size_bytes=result.checkpoint.stat().st_size, relpath=key))
    return job_id, key


def test_another_host_resumes_from_the_recorded_checkpoint_in_the_store(worker_db, s3_bucket, tmp_path):
    job_id, _ = _first_attempt_died_after_step_100(worker_db, s3_bucket, tmp_path)

    assert run_on(worker_db, host(worker_db, s3_bucket, tmp_path, "b"), job_id) is JobStatus.SUCCEEDED
    # Resumed, not restarted: attempt 2 wrote no checkpoint before the final one.
    assert [(r.step, r.attempt) for r in checkpoint_rows(worker_db, job_id)] == [(100, 1), (200, 2)]
    assert (tmp_path / "b" / "jobs" / job_id / "ckpt-000000100.safetensors").is_file()


def test_a_tampered_checkpoint_in_the_store_fails_a_resume_elsewhere_but_not_where_a_good_copy_is(
        worker_db, s3_bucket, tmp_path):
    job_id, key = _first_attempt_died_after_step_100(worker_db, s3_bucket, tmp_path)
    weights = bytearray(s3_bucket.read(key))
    weights[-1] ^= 1
    s3_bucket.write(key, bytes(weights))

    assert run_on(worker_db, host(worker_db, s3_bucket, tmp_path, "b"), job_id) is JobStatus.FAILED
    job = worker_db.job(job_id)
    assert job.error.startswith("CheckpointError: no recorded checkpoint verifies") and "does not match" in job.error
    assert not (tmp_path / "b" / "jobs" / job_id / "ckpt-000000100.safetensors").exists()


def test_a_dataset_is_fetched_once_per_host_and_verified(worker_db, s3_bucket, tmp_path):
    owner = worker_db.add_owner()
    dataset_id, data = upload(worker_db, s3_bucket, owner, tmp_path)
    a = host(worker_db, s3_bucket, tmp_path, "a")
    assert run_on(worker_db, a, worker_db.add_job(dataset_spec(dataset_id), owner_id=owner)) is JobStatus.SUCCEEDED
    cached = tmp_path / "a" / "cache" / "datasets" / f"{hashlib.sha256(data).hexdigest()}.npz"
    assert cached.read_bytes() == data

    s3_bucket.write(dataset_key(dataset_id), data[:-1] + bytes([data[-1] ^ 1]))
    # Host a does not download it again (the tampered copy is never read there) ...
    assert run_on(worker_db, a, worker_db.add_job(dataset_spec(dataset_id), owner_id=owner)) is JobStatus.SUCCEEDED
    # ... while host b must, and refuses what does not match the upload's sha256.
    failed = worker_db.add_job(dataset_spec(dataset_id), owner_id=owner)
    assert run_on(worker_db, host(worker_db, s3_bucket, tmp_path, "b"), failed) is JobStatus.FAILED
    assert "DataError: data.id: the stored upload does not match its sha256" in worker_db.job(failed).error
    assert list((tmp_path / "b" / "cache" / "datasets").iterdir()) == []


def test_a_store_outage_shorter_than_the_lease_is_ridden_out(worker_db, s3_bucket, tmp_path):
    job_id = worker_db.add_job(tiny_spec())
    s3_bucket.server.stop()
    restart = threading.Timer(2.0, s3_bucket.server.start)
    restart.start()
    try:
        status = run_on(worker_db, host(worker_db, s3_bucket, tmp_path, "a", lease_seconds=20.0), job_id)
    finally:
        restart.join()
    assert status is JobStatus.SUCCEEDED and worker_db.job(job_id).attempt == 1
    final = checkpoint_rows(worker_db, job_id)[-1]
    assert hashlib.sha256(s3_bucket.read(final.relpath)).hexdigest() == final.sha256


def test_a_store_down_for_a_whole_lease_stops_the_attempt_and_the_next_one_finishes(worker_db, s3_bucket, tmp_path):
    job_id = worker_db.add_job(tiny_spec())
    s3_bucket.server.stop()
    try:
        assert run_on(worker_db, host(worker_db, s3_bucket, tmp_path, "a", lease_seconds=1.0), job_id) is None
    finally:
        s3_bucket.server.start()
    job = worker_db.job(job_id)
    # No outcome written: the job is still the dead attempt's until its lease runs out (the reconciler's cue).
    assert (job.status, job.attempt, job.error) == (JobStatus.RUNNING, 1, None)
    with worker_db.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert run_on(worker_db, host(worker_db, s3_bucket, tmp_path, "b"), job_id) is JobStatus.SUCCEEDED
    assert worker_db.job(job_id).attempt == 2
