"""run_pack: the body of the narrownet.run_pack task (a sweep's configs that train as one vectorized program).

Each job of the pack is claimed with run_job's conditional claim (a new attempt, a lease); the ones claimed train
together (trainer.loop.train_pack) in their own run directories, resuming each from its own last recorded
checkpoint, and every write goes through the job's own fenced JobStore (worker/pack_progress.py). A job another
worker holds, or one already finished or cancelled, is simply not claimed: the rest train without it. A config
that fails alone (divergence, a checkpoint that does not verify) ends `failed` while the others carry on; a
failure of the whole pack (its data, its device) is recorded on each job as run_job records it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from core.artifacts.store import get_artifact_store, store_for
from core.db.models import JobStatus
from core.db.session import get_sessionmaker
from core.repositories import jobs as jobs_repo
from core.repositories.jobs import ClaimedJob
from core.settings import Settings, get_settings
from trainer.data import load_data
from trainer.loop import train_pack
from trainer.packing import pack_key
from trainer.spec import DatasetRef, JobSpec
from worker.db_retry import Unavailable, with_retries
from worker.job_store import JobStore, LeaseLost
from worker.pack_progress import PackProgress
from worker.runner import dataset_id, use_job_threads

log = logging.getLogger(__name__)


def run_pack(job_ids: Sequence[str], *, worker_id: str, settings: Settings | None = None,
             sessions: sessionmaker[Session] | None = None, thread_cap: int | None = None
             ) -> dict[str, JobStatus | None]:
    """Run one attempt of each claimable job of the pack; return the status each claimed job ended in (None:
    this call did not finish it: its lease was lost, or the database was gone for a whole lease). thread_cap: as
    for run_job, for the pack's step (all its configs)."""
    # The process's store, unless the caller brings settings of its own (tests do).
    artifacts = get_artifact_store() if settings is None else store_for(settings)
    settings = settings or get_settings()
    sessions = sessions or get_sessionmaker()

    def claim() -> list[ClaimedJob]:
        with sessions.begin() as session:  # one transaction for all: the same conditional claim per job
            claimed = (jobs_repo.claim(session, job_id, worker_id=worker_id, lease_seconds=settings.lease_seconds,
                                       max_attempts=settings.max_attempts) for job_id in dict.fromkeys(job_ids))
            return [job for job in claimed if job is not None]

    try:
        jobs = with_retries(claim, what=f"pack of {len(job_ids)} jobs: claim", budget_seconds=settings.lease_seconds)
    except Unavailable as exc:
        log.warning("%s; the reconciler sends the jobs again", exc)
        return {}
    skipped = len(set(job_ids)) - len(jobs)
    if skipped:
        log.info("pack: %d of %d jobs have nothing to run (finished, cancelled, or leased by another worker)",
                 skipped, len(set(job_ids)))
    if not jobs:
        return {}
    stores = [JobStore(sessions, job, lease_seconds=settings.lease_seconds, artifacts=artifacts,
                       work_dir=settings.resolved_work_dir, pack_min_points=settings.series_pack_min_points)
              for job in jobs]
    progress = PackProgress(sessions, stores, flush_every=settings.metrics_flush_every,
                            max_attempts=settings.max_attempts, lease_seconds=settings.lease_seconds)
    try:
        for group in _groups(stores, progress):
            _train(group, progress, settings, thread_cap)
    except (LeaseLost, Unavailable) as exc:
        log.warning("%s; the pack stops, and once the leases run out the reconciler hands its jobs on", exc)
    return progress.statuses


def _groups(stores: list[JobStore], progress: PackProgress) -> list[list[tuple[JobStore, JobSpec]]]:
    """The jobs that can train as one program, together; a job whose spec does not validate fails alone."""
    groups: dict[str, list[tuple[JobStore, JobSpec]]] = {}
    for store in stores:
        try:
            spec = JobSpec.model_validate(store.job.spec)
        except ValidationError as exc:
            progress.end(store.job.id, exc)
            continue
        groups.setdefault(pack_key(spec) or store.job.id, []).append((store, spec))
    return list(groups.values())


def _train(group: list[tuple[JobStore, JobSpec]], progress: PackProgress, settings: Settings,
           thread_cap: int | None) -> None:
    members: list[tuple[JobStore, JobSpec, Path]] = []
    dataset_path: Path | None = None
    for store, spec in group:
        try:
            if isinstance(spec.data, DatasetRef):  # the owner's dataset (the API checked it; we check again)
                dataset_path = store.dataset_path(dataset_id(spec.data))
            # Each job resumes from its own newest recorded checkpoint (fetched from the store if need be).
            run_dir = store.prepare_run_dir()
        except (LeaseLost, Unavailable):
            raise
        except Exception as exc:
            progress.end(store.job.id, exc)
            continue
        members.append((store, spec, run_dir))
    members = [member for member in members if member[0].job.id in progress.live]
    if not members:
        return
    ids = [store.job.id for store, _, _ in members]
    specs = [spec for _, spec, _ in members]
    try:
        data = load_data(specs[0].data, data_dir=settings.data_dir, dataset_path=dataset_path)
        if thread_cap is not None:
            use_job_threads(thread_cap, specs[0], data, configs=len(specs))
        # durable=False: the store's copy of each checkpoint is the durable one (as in run_job).
        train_pack(specs, [run_dir for _, _, run_dir in members], progress.callbacks(ids), data=data,
                   spec_hashes=[store.job.spec_hash for store, _, _ in members], durable=False)
    except (LeaseLost, Unavailable):
        raise
    except Exception as exc:  # the whole pack failed (its data, its device): each job records it as run_job does
        log.exception("pack of %d jobs failed", len(ids))
        for job_id in ids:
            progress.end(job_id, exc)
