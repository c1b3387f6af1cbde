"""Jobs: submission (idempotent, capped, enqueued after commit), reading, listing, cancelling, metrics."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from api.errors import Conflict, InvalidInput, NotFound
from api.services import quota, reuse
from core.artifacts.store import ArtifactStore
from core.db.hooks import after_commit
from core.db.models import ApiKey, Job, JobStatus, new_id, utcnow
from core.ids import is_plain_id
from core.queue import queue_for
from core.repositories import datasets as datasets_repo
from core.repositories import jobs as repo
from core.repositories.jobs import JobFilters
from core.settings import Settings
from trainer.fingerprint import canonical_json
from trainer.spec import DatasetRef, JobSpec, NpzData

Enqueue = Callable[[str, str], None]


def request_hash(spec: JobSpec, dumped: Mapping[str, Any] | None = None) -> str:
    """Digest of the validated spec: bodies that differ only in spelled-out defaults are the same job. `dumped`:
    spec.model_dump(mode="json"), when the caller has it."""
    return hashlib.sha256(canonical_json(dumped if dumped is not None else spec.model_dump(mode="json")
                                         ).encode()).hexdigest()


@dataclass(frozen=True)
class Submission:
    job: Job
    created: bool  # False: an Idempotency-Key replay of an earlier submission, or a reused job
    reused: bool = False  # an earlier succeeded job with the same spec_hash (Reuse: succeeded)


def data_source_errors(session: Session, owner: ApiKey, spec: JobSpec) -> list[tuple[str, str]]:
    """What is wrong with where a spec's data comes from, as (field, reason) relative to the spec."""
    return _resolved(session, owner, spec)[1]


def resolve_data_source(session: Session, owner: ApiKey, spec: JobSpec) -> JobSpec:
    """The spec as it will run: an uploaded dataset named by `name` gets the id of the owner's newest dataset
    of that name (so the job keeps training on those bytes whatever is uploaded later); 422 when there is none."""
    resolved, errors = _resolved(session, owner, spec)
    if errors:
        raise InvalidInput(errors)
    return resolved


def _resolved(session: Session, owner: ApiKey, spec: JobSpec) -> tuple[JobSpec, list[tuple[str, str]]]:
    data = spec.data
    if isinstance(data, NpzData):
        return spec, [("data.source", "'npz' reads a path on the machine that runs it, which only the command line "
                       "may do; upload the file with POST /v1/datasets (or `narrownet datasets upload FILE --name "
                       "NAME`) and use {\"source\": \"dataset\", \"name\": NAME}")]
    if not isinstance(data, DatasetRef):
        return spec, []
    if data.id is not None:
        if datasets_repo.get_owned(session, owner.id, data.id) is None:
            return spec, [("data.id", f"no dataset with id {data.id!r}; `narrownet datasets list` shows yours, or "
                           "upload one with POST /v1/datasets")]
        return spec, []
    found = datasets_repo.newest_named(session, owner.id, str(data.name))
    if found is None:
        return spec, [("data.name", f"no dataset named {data.name!r}; upload one with `narrownet datasets upload "
                       f"FILE --name {data.name}` (or POST /v1/datasets)")]
    return spec.model_copy(update={"data": data.model_copy(update={"id": found.id})}), []


def _replay(existing: Job, digest: str, key: str) -> Submission:
    if existing.request_hash != digest:
        raise Conflict(f"Idempotency-Key {key!r} was already used for a different job spec (job {existing.id})",
                       code="idempotency_conflict")
    return Submission(existing, created=False)


def submit_job(session: Session, owner: ApiKey, spec: JobSpec, *, idempotency_key: str | None,
               settings: Settings, enqueue: Enqueue, reuse_from: ArtifactStore | None = None) -> Submission:
    """Record a queued job and arrange for it to be sent to its queue once the transaction commits; with
    reuse_from (the artifact store holding results), answer with the caller's succeeded job of the same spec_hash
    instead, when there is one whose result is still there."""
    # The digest is of the spec as sent: a replay with the same body is the same job, whatever it resolved to.
    digest = request_hash(spec)
    spec = resolve_data_source(session, owner, spec)
    if idempotency_key is not None:
        existing = repo.get_by_idempotency_key(session, owner.id, idempotency_key)
        if existing is not None:
            return _replay(existing, digest, idempotency_key)
    hashed = reuse.spec_hash_of(session, owner, spec, settings)
    if reuse_from is not None and (done := reuse.reusable_job(session, owner, hashed, reuse_from)):
        return Submission(done, created=False, reused=True)
    submission = quota.insert_within_queued_cap(
        session, owner, settings, lambda: _insert(session, owner, spec, digest, idempotency_key, hashed))
    if submission.created:
        job_id, queue = submission.job.id, submission.job.queue
        after_commit(session, lambda: enqueue(job_id, queue))
    return submission


def new_job_values(owner: ApiKey, spec: JobSpec, digest: str, idempotency_key: str | None,
                   hashed: str | None, dumped: dict[str, Any] | None = None) -> dict[str, Any]:
    """A submitted job's row: core.repositories.jobs.SUBMITTED_COLUMNS (`dumped`: as for request_hash)."""
    now = utcnow()
    return {
        "id": new_id(), "owner_id": owner.id, "name": spec.name, "regime": spec.regime,
        "spec": dumped if dumped is not None else spec.model_dump(mode="json"),
        "queue": queue_for(spec), "status": JobStatus.QUEUED,
        "idempotency_key": idempotency_key, "request_hash": digest, "spec_hash": hashed,
        # Known up front for iteration budgets; for epochs the worker fills it in once the data is loaded.
        "total_steps": spec.optim.iterations, "attempt": 0, "step": 0, "cancel_requested": False,
        "created_at": now, "updated_at": now,
    }


def _insert(session: Session, owner: ApiKey, spec: JobSpec, digest: str, idempotency_key: str | None,
            hashed: str | None) -> Submission:
    values = new_job_values(owner, spec, digest, idempotency_key, hashed)
    if idempotency_key is None:
        return Submission(repo.add(session, values), created=True)
    if repo.insert_unless_key_taken(session, values):
        return Submission(session.get_one(Job, values["id"]), created=True)
    # A concurrent request with the same key committed first.
    winner = repo.get_by_idempotency_key(session, owner.id, idempotency_key)
    assert winner is not None
    return _replay(winner, digest, idempotency_key)


def valid_job_id(job_id: str) -> bool:
    """Server-made ids are 32 hex characters; anything far off that is unknown without asking the database."""
    return is_plain_id(job_id)


def get_job(session: Session, owner: ApiKey, job_id: str) -> Job:
    """The caller's job; another user's job is as absent as one that never existed."""
    job = repo.get_owned(session, owner.id, job_id) if valid_job_id(job_id) else None
    if job is None:
        raise job_not_found(job_id)
    return job


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"no job {job_id[:64]!r}")


def list_jobs(session: Session, owner: ApiKey, filters: JobFilters, *, limit: int,
              offset: int) -> tuple[list[dict[str, Any]], int]:
    """A page of the caller's jobs, newest first (rows by column name), and how many match in all."""
    return repo.list_owned(session, owner.id, filters, limit=limit, offset=offset)


def get_jobs(session: Session, owner: ApiKey, job_ids: Sequence[str]) -> list[Job]:
    """The caller's jobs in the order asked; 404 naming the first one that is not theirs."""
    found = {job.id: job for job in repo.list_owned_by_ids(session, owner.id, job_ids)}
    missing = next((i for i in job_ids if i not in found), None)
    if missing is not None:
        raise job_not_found(missing)
    return [found[i] for i in job_ids]


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
    # A reused sweep config's series is the one of the job that trained it.
    return repo.metric_points(session, job.reused_from or job.id, since_step=since_step, every=every, limit=limit)
