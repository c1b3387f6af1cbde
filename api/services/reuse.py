"""Result reuse: a job's spec_hash, and the caller's succeeded job with the same hash (Reuse: succeeded).

Reuse is per user: a job is never handed to another user, since there is no public dataset (or public job) to
share through today; two users training the same public recipe each train it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from core.artifacts.errors import ArtifactNotFound
from core.artifacts.store import ArtifactStore
from core.db.models import ApiKey, Job
from core.repositories import datasets as datasets_repo
from core.repositories import jobs as jobs_repo
from core.settings import Settings
from trainer.fingerprint import data_identity, spec_hash
from trainer.spec import DatasetRef, JobSpec


def spec_hash_of(session: Session, owner: ApiKey, spec: JobSpec, settings: Settings) -> str | None:
    """The spec_hash of a spec whose data source is resolved (resolve_data_source); None when the data's content
    cannot be read here (the data directory's files are missing), and such a job is never reused."""
    sha256 = None
    if isinstance(spec.data, DatasetRef) and spec.data.id is not None:
        dataset = datasets_repo.get_owned(session, owner.id, spec.data.id)
        sha256 = dataset.sha256 if dataset is not None else None
    return spec_hash_given(spec, settings, dataset_sha256=sha256)


def spec_hash_given(spec: JobSpec, settings: Settings, *, dataset_sha256: str | None = None,
                    dumped: Mapping[str, Any] | None = None) -> str | None:
    """spec_hash_of, with an uploaded dataset's recorded sha256 already looked up (when the spec names one);
    `dumped`: the spec's JSON dump, when the caller has it."""
    identity = data_identity(spec.data, dataset_sha256=dataset_sha256, data_dir=settings.data_dir)
    return None if identity is None else spec_hash(spec, identity, dumped=dumped)


def reusable_jobs(session: Session, owner: ApiKey, digests: Sequence[str | None],
                  artifacts: ArtifactStore) -> list[Job | None]:
    """For each spec_hash (a sweep's configs, or one job's), the owner's newest succeeded job with it whose final
    checkpoint is still in the artifact store; never a failed or cancelled job, never another user's."""
    found = jobs_repo.newest_succeeded_by_hash(session, owner.id, [d for d in digests if d is not None])
    return [_with_result(session, found.get(d), artifacts) if d is not None else None for d in digests]


def reusable_job(session: Session, owner: ApiKey, digest: str | None, artifacts: ArtifactStore) -> Job | None:
    return reusable_jobs(session, owner, [digest], artifacts)[0]


def _with_result(session: Session, job: Job | None, artifacts: ArtifactStore) -> Job | None:
    if job is None:
        return None
    checkpoint = jobs_repo.latest_checkpoint(session, job.id)
    if checkpoint is None or not checkpoint.final:
        return None
    try:
        artifacts.open(checkpoint.relpath).close()
    except ArtifactNotFound:
        return None  # its result is gone: train it again
    return job
