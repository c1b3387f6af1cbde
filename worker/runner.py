"""run_job: the body of the narrownet.run_job task, callable directly (tests call it without Celery).

The job row is the source of truth: claim it (a new attempt), train with fenced progress writes, set the
outcome. Anything already finished, cancelled or live-leased by another worker is left alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from api.db.models import JobStatus
from api.db.session import get_sessionmaker
from narrownet.settings import Settings, get_settings
from trainer.loop import TrainResult, train
from trainer.spec import DatasetRef, JobSpec
from worker.job_store import ClaimedJob, JobStore, LeaseLost, claim_job
from worker.progress import JobProgress

log = logging.getLogger(__name__)


def job_dir(artifact_dir: Path, job_id: str) -> Path:
    return artifact_dir / "jobs" / job_id


def run_job(job_id: str, *, worker_id: str, settings: Settings | None = None,
            sessions: sessionmaker[Session] | None = None) -> JobStatus | None:
    """Run one attempt of a job; return the status it ended in, or None if this call did not run it."""
    settings = settings or get_settings()
    sessions = sessions or get_sessionmaker()
    with sessions.begin() as session:
        job = claim_job(session, job_id, worker_id=worker_id, lease_seconds=settings.lease_seconds,
                        max_attempts=settings.max_attempts)
    if job is None:
        log.info("job %s: nothing to run (finished, cancelled, or leased by another worker)", job_id)
        return None
    store = JobStore(sessions, job, lease_seconds=settings.lease_seconds,
                     artifact_dir=settings.resolved_artifact_dir)
    try:
        return _train_claimed(job, store, settings)
    except LeaseLost as exc:
        log.warning("%s; attempt %d stops without writing", exc, job.attempt)
        return None


def _train_claimed(job: ClaimedJob, store: JobStore, settings: Settings) -> JobStatus:
    progress: JobProgress | None = None
    try:
        spec = JobSpec.model_validate(job.spec)
        dataset_path = store.dataset_path(spec.data.id) if isinstance(spec.data, DatasetRef) else None
        progress = JobProgress(store, flush_every=settings.metrics_flush_every,
                               total_steps=spec.optim.iterations)
        # The trainer resumes from the checkpoint in this directory when a previous attempt left one.
        result = train(spec, job_dir(store.artifact_dir, job.id), callbacks=progress,
                       data_dir=settings.data_dir, dataset_path=dataset_path)
        progress.flush()
    except LeaseLost:
        raise
    except Exception as exc:  # every failure ends the job `failed` with its reason, never `running`
        log.exception("job %s attempt %d failed", job.id, job.attempt)
        if progress is not None:
            _flush_quietly(progress)
        store.finish(JobStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        return JobStatus.FAILED

    if result.status == "completed":
        store.finish(JobStatus.SUCCEEDED, step=result.step, total_steps=result.total_steps,
                     final_metrics=result.final_metrics, final_checkpoint=_final_checkpoint(result))
        return JobStatus.SUCCEEDED
    # "stopped": should_stop() said so, which only a cancel makes it do; the last checkpoint stays.
    store.finish(JobStatus.CANCELLED, step=result.step, total_steps=result.total_steps)
    return JobStatus.CANCELLED


def _final_checkpoint(result: TrainResult) -> tuple[int, Path, str] | None:
    # Read from the checkpoint's own metadata: a resumed, already finished run reports it without a callback.
    if result.checkpoint is None:
        return None
    meta = json.loads(result.checkpoint.with_suffix(".json").read_text())
    return result.step, result.checkpoint, meta["sha256"]


def _flush_quietly(progress: JobProgress) -> None:
    # Keep the metrics recorded before a failure; the failure itself is what must be written.
    try:
        progress.flush()
    except LeaseLost:
        raise
    except Exception:
        log.exception("could not flush metrics of a failed job")
