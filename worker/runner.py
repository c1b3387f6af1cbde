"""run_job: the body of the narrownet.run_job task, callable directly (tests call it without Celery).

The job row is the source of truth: claim it (a new attempt), train with fenced progress writes, set the
outcome. Anything already finished, cancelled or live-leased by another worker is left alone. A failure that
says the job itself is wrong ends it `failed` at once; any other failure puts it back in the queue until it
has used max_attempts. An attempt that loses the database or the artifact store for a whole lease stops without
an outcome: its lease runs out and the reconciler hands the job on.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from core.artifacts.store import ArtifactStore, get_artifact_store, store_for
from core.db.models import JobStatus
from core.db.session import get_sessionmaker
from core.repositories import jobs as jobs_repo
from core.repositories.jobs import ClaimedJob
from core.settings import Settings, get_settings
from trainer.checkpoint import CheckpointError
from trainer.data import Dataset, load_data
from trainer.data.errors import DataError
from trainer.loop import TrainingDiverged, TrainResult, train
from trainer.spec import DatasetRef, JobSpec
from trainer.threads import step_macs, threads_for
from worker.db_retry import Unavailable, with_retries
from worker.job_store import JobStore, LeaseLost
from worker.progress import JobProgress
from worker.throughput import RunTiming, throughput_writer

log = logging.getLogger(__name__)

# The job itself is wrong (bad spec or data, divergence, a checkpoint that does not verify): another attempt
# would fail the same way, so these end the job at once.
PERMANENT_FAILURES = (TrainingDiverged, DataError, CheckpointError, ValidationError, LookupError)


def run_job(job_id: str, *, worker_id: str, settings: Settings | None = None,
            sessions: sessionmaker[Session] | None = None, artifacts: ArtifactStore | None = None,
            thread_cap: int | None = None) -> JobStatus | None:
    """Run one attempt of a job; return the status it ended in, or None if this call did not run it.

    thread_cap: the most torch threads the job may use; it takes 1 when its steps are small (use_job_threads).
    None leaves torch's thread count as it is (the worker's setting fixed it, or a test calls).
    """
    artifacts = artifacts or (get_artifact_store() if settings is None else store_for(settings))
    settings = settings or get_settings()
    sessions = sessions or get_sessionmaker()

    def claim() -> ClaimedJob | None:
        with sessions.begin() as session:
            return jobs_repo.claim(session, job_id, worker_id=worker_id, lease_seconds=settings.lease_seconds,
                                   max_attempts=settings.max_attempts)

    try:
        job = with_retries(claim, what=f"job {job_id}: claim", budget_seconds=settings.lease_seconds)
    except Unavailable as exc:
        log.warning("%s; the reconciler sends the job again", exc)
        return None
    if job is None:
        log.info("job %s: nothing to run (finished, cancelled, or leased by another worker)", job_id)
        return None
    store = JobStore(sessions, job, lease_seconds=settings.lease_seconds, artifacts=artifacts,
                     work_dir=settings.resolved_work_dir, pack_min_points=settings.series_pack_min_points)
    try:
        status = _train_claimed(job, store, settings, thread_cap)
    except LeaseLost as exc:
        log.warning("%s; attempt %d stops without writing", exc, job.attempt)
        return None
    except Unavailable as exc:
        log.warning("%s; attempt %d stops, and once its lease runs out the reconciler hands the job on",
                    exc, job.attempt)
        return None
    log.info("job %s attempt %d: %s", job_id, job.attempt,
             "queued again for another attempt" if status == JobStatus.QUEUED else status.value)
    return status


def use_job_threads(thread_cap: int, spec: JobSpec, data: Dataset, configs: int = 1) -> None:
    """Set torch's threads for a run as the trainer's CLI does (trainer/threads.py): one for small steps, where a
    second thread's fork/join per op costs more than it saves (and, on a busy machine, waits for a core), else
    the pool process's share of the cores."""
    macs = step_macs(spec, data.n_train, math.prod(data.input_shape), data.output_dim, configs)
    torch.set_num_threads(threads_for(macs, thread_cap))


def _train_claimed(job: ClaimedJob, store: JobStore, settings: Settings, thread_cap: int | None) -> JobStatus:
    progress: JobProgress | None = None
    claimed = time.monotonic()
    try:
        spec = JobSpec.model_validate(job.spec)
        dataset_path = store.dataset_path(dataset_id(spec.data)) if isinstance(spec.data, DatasetRef) else None
        progress = JobProgress(store, flush_every=settings.metrics_flush_every,
                               total_steps=spec.optim.iterations)
        # The trainer resumes from the checkpoint in this directory when a previous attempt recorded one.
        run_dir = store.prepare_run_dir()
        data = load_data(spec.data, data_dir=settings.data_dir, dataset_path=dataset_path)
        if thread_cap is not None:
            use_job_threads(thread_cap, spec, data)
        # Not fsynced in the run directory (durable=False): what survives a crash is the copy in the artifact store,
        # fsynced (file and directory) before any row names it; a resume verifies the run directory against the
        # rows (JobArtifacts.prepare) and fetches from the store what it lacks.
        result = train(spec, run_dir, callbacks=progress, data=data, spec_hash=job.spec_hash, durable=False)
        timing = RunTiming(claimed, progress.loop_started, progress.start_step, time.monotonic())
        points = progress.take_pending()  # written with the outcome
    except (LeaseLost, Unavailable):
        raise
    except Exception as exc:  # every failure is recorded with its reason; the job never stays `running`
        log.exception("job %s attempt %d failed", job.id, job.attempt)
        if progress is not None:
            _flush_quietly(progress)
        return record_failure(job, store, exc, settings.max_attempts)

    if result.status == "completed":
        # The last points, the final checkpoint's row (JobProgress.on_checkpoint leaves it to us) and the throughput
        # sample ride in the outcome's transaction: a job without periodic checkpoints commits twice (claim, outcome).
        store.finish(JobStatus.SUCCEEDED, step=result.step, total_steps=result.total_steps,
                     final_metrics=result.final_metrics, final_checkpoint=final_checkpoint(result), points=points,
                     also=throughput_writer(job.id, spec, result, timing))
        return JobStatus.SUCCEEDED
    # "stopped": should_stop() said so, which only a cancel makes it do; the last checkpoint stays.
    store.finish(JobStatus.CANCELLED, step=result.step, total_steps=result.total_steps, points=points)
    return JobStatus.CANCELLED


def dataset_id(ref: DatasetRef) -> str:
    # The API stores the id it resolved a name to; a spec without one never passed through the API.
    if ref.id is None:
        raise LookupError(f"data.id: the job names dataset {ref.name!r} but carries no resolved id")
    return ref.id


def record_failure(job: ClaimedJob, store: JobStore, exc: Exception, max_attempts: int) -> JobStatus:
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PERMANENT_FAILURES):
        store.finish(JobStatus.FAILED, error=reason)
        return JobStatus.FAILED
    if job.attempt >= max_attempts:
        store.finish(JobStatus.FAILED, error=f"attempt {job.attempt} of {max_attempts} failed: {reason}")
        return JobStatus.FAILED
    # Perhaps passing (a full disk, memory, a lost GPU): the next attempt resumes from the last checkpoint.
    store.release_for_retry(f"attempt {job.attempt} of {max_attempts} failed, will retry: {reason}")
    return JobStatus.QUEUED


def final_checkpoint(result: TrainResult) -> tuple[int, Path, str] | None:
    # Read from the checkpoint's own metadata: a resumed, already finished run reports it without a callback.
    if result.checkpoint is None:
        return None
    meta = json.loads(result.checkpoint.with_suffix(".json").read_text())
    return result.step, result.checkpoint, meta["sha256"]


def _flush_quietly(progress: JobProgress) -> None:
    # Keep the metrics recorded before a failure; the failure itself is what must be written.
    try:
        progress.flush()
    except (LeaseLost, Unavailable):
        raise
    except Exception:
        log.exception("could not flush metrics of a failed job")
