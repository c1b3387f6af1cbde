"""Jobs: submission (idempotent, capped, enqueued after commit), reading, listing, cancelling, metrics."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from api.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from core.db.hooks import after_commit
from core.db.models import ApiKey, Job, JobStatus, new_id, utcnow
from core.queue import queue_for
from core.repositories import datasets as datasets_repo
from core.repositories import jobs as repo
from core.repositories.jobs import JobFilters
from core.settings import Settings
from trainer.spec import JobSpec

Enqueue = Callable[[str, str], None]

# Server-made ids are 32 hex characters; anything far off that is unknown without asking the database.
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def request_hash(spec: JobSpec) -> str:
    """Digest of the validated spec: bodies that differ only in spelled-out defaults are the same job."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Submission:
    job: Job
    created: bool  # False: an Idempotency-Key replay of an earlier submission


def data_source_errors(session: Session, owner: ApiKey, spec: JobSpec) -> list[tuple[str, str]]:
    """What is wrong with where a spec's data comes from, as (field, reason) relative to the spec."""
    data = spec.data
    if data.source == "npz":
        return [("data.source", "'npz' reads a path on the machine that runs it, which only the command line may "
                 "do; upload the file with POST /v1/datasets and use {\"source\": \"dataset\", \"id\": ...}")]
    if data.source == "dataset" and datasets_repo.get_owned(session, owner.id, data.id) is None:
        return [("data.id", f"no dataset {data.id!r}; upload one with POST /v1/datasets")]
    return []


def _replay(existing: Job, digest: str, key: str) -> Submission:
    if existing.request_hash != digest:
        raise Conflict(f"Idempotency-Key {key!r} was already used for a different job spec (job {existing.id})",
                       code="idempotency_conflict")
    return Submission(existing, created=False)


def submit_job(session: Session, owner: ApiKey, spec: JobSpec, *, idempotency_key: str | None,
               settings: Settings, enqueue: Enqueue) -> Submission:
    """Record a queued job and arrange for it to be sent to its queue once the transaction commits."""
    if errors := data_source_errors(session, owner, spec):
        raise InvalidInput(errors)
    digest = request_hash(spec)
    if idempotency_key is not None:
        existing = repo.get_by_idempotency_key(session, owner.id, idempotency_key)
        if existing is not None:
            return _replay(existing, digest, idempotency_key)
    if repo.count_queued(session, owner.id) >= settings.max_queued_jobs_per_user:
        raise TooManyRequests(f"you already have {settings.max_queued_jobs_per_user} queued jobs, the most "
                              "allowed; wait for some to start or cancel them", code="too_many_queued_jobs")

    now = utcnow()
    values: dict[str, Any] = {
        "id": new_id(), "owner_id": owner.id, "name": spec.name, "regime": spec.regime,
        "spec": spec.model_dump(mode="json"), "queue": queue_for(spec), "status": JobStatus.QUEUED,
        "idempotency_key": idempotency_key, "request_hash": digest,
        # Known up front for iteration budgets; for epochs the worker fills it in once the data is loaded.
        "total_steps": spec.optim.iterations, "created_at": now, "updated_at": now,
    }
    if idempotency_key is None:
        job = repo.add(session, values)
    elif repo.insert_unless_key_taken(session, values):
        job = session.get_one(Job, values["id"])
    else:  # a concurrent request with the same key committed first
        winner = repo.get_by_idempotency_key(session, owner.id, idempotency_key)
        assert winner is not None
        return _replay(winner, digest, idempotency_key)

    job_id, queue = job.id, job.queue
    after_commit(session, lambda: enqueue(job_id, queue))
    return Submission(job, created=True)


def get_job(session: Session, owner: ApiKey, job_id: str) -> Job:
    """The caller's job; another user's job is as absent as one that never existed."""
    job = repo.get_owned(session, owner.id, job_id) if _ID.match(job_id) else None
    if job is None:
        raise NotFound(f"no job {job_id[:64]!r}")
    return job


def list_jobs(session: Session, owner: ApiKey, filters: JobFilters, *, limit: int,
              offset: int) -> tuple[Sequence[Job], int]:
    return repo.list_owned(session, owner.id, filters, limit=limit, offset=offset)


def cancel_job(session: Session, owner: ApiKey, job_id: str) -> Job:
    """Idempotent: queued -> cancelled now; running -> cancel_requested (the worker stops it and marks it
    cancelled, keeping its last checkpoint); a finished job is left as it is."""
    job = get_job(session, owner, job_id)
    now = utcnow()
    if not repo.cancel_if_queued(session, job.id, now):
        repo.request_cancel_if_running(session, job.id, now)
    session.refresh(job)
    return job


def metric_points(session: Session, owner: ApiKey, job_id: str, *, since_step: int | None, every: int,
                  limit: int) -> Sequence[tuple[int, dict[str, Any]]]:
    job = get_job(session, owner, job_id)
    return repo.metric_points(session, job.id, since_step=since_step, every=every, limit=limit)
