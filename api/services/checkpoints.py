"""A job's latest checkpoint, served only after its bytes are checked against the recorded sha256.

The bytes come from the artifact store (a directory, or S3-compatible storage): they are hashed once, then that
same version of the object is streamed to the client and hashed again on the way, so nothing is held in memory
and nothing unverified is served. Missing is a 410, a mismatch a 409, a store that cannot be reached a 503.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from api.errors import Conflict, Gone, NotFound
from api.services.jobs import get_job
from core.artifacts.errors import ArtifactChanged, ArtifactMismatch, ArtifactNotFound
from core.artifacts.keys import meta_key
from core.artifacts.store import ArtifactReader, ArtifactStore
from core.artifacts.verified import open_verified, read_small
from core.db.models import ApiKey, Checkpoint, Job
from core.jsonvalues import finite_or_none
from core.repositories import jobs as jobs_repo

MAX_META_BYTES = 16 << 20


@dataclass
class VerifiedCheckpoint:
    """An open checkpoint whose bytes hash to `sha256`; serve from this reader, which checks them again."""

    reader: ArtifactReader
    sha256: str
    step: int
    filename: str

    @property
    def size(self) -> int:
        return self.reader.size

    def chunks(self) -> Iterator[bytes]:
        with self.reader:
            yield from self.reader.chunks()


def _trained_by(job: Job) -> str:
    """The job whose checkpoints are this one's: a reused sweep config's are those of the job it points at."""
    return job.reused_from or job.id


def _latest(session: Session, owner: ApiKey, job_id: str) -> Checkpoint:
    job = get_job(session, owner, job_id)
    checkpoint = jobs_repo.latest_checkpoint(session, _trained_by(job))
    if checkpoint is None:
        raise NotFound(f"job {job.id} has no checkpoint yet", code="checkpoint_not_found")
    return checkpoint


def _gone(checkpoint: Checkpoint, what: str, exc: Exception) -> Gone:
    return Gone(f"{what} of job {checkpoint.job_id} is missing or unreadable ({exc})", code="checkpoint_missing")


def _mismatch(checkpoint: Checkpoint, actual: str) -> Conflict:
    return Conflict(
        f"checkpoint of job {checkpoint.job_id} at step {checkpoint.step} does not match its recorded sha256 "
        f"({actual} != {checkpoint.sha256}); a newer one may be being written, retry shortly",
        code="checkpoint_mismatch", headers={"Retry-After": "2"},
    )


def etag(checkpoint_sha256: str) -> str:
    return f'"{checkpoint_sha256}"'


def latest_recorded(session: Session, owner: ApiKey, job_id: str) -> Checkpoint | None:
    """The latest checkpoint row of the caller's job (not read from disk), or None before the first."""
    return jobs_repo.latest_checkpoint(session, _trained_by(get_job(session, owner, job_id)))


def latest_sha256(session: Session, owner: ApiKey, job_id: str) -> str:
    return _latest(session, owner, job_id).sha256


def open_latest(session: Session, owner: ApiKey, job_id: str, store: ArtifactStore) -> VerifiedCheckpoint:
    """Open the latest checkpoint and check its sha256; 410 when the object is gone, 409 on a mismatch."""
    checkpoint = _latest(session, owner, job_id)
    try:
        reader = open_verified(store, checkpoint.relpath, checkpoint.sha256)
    except ArtifactNotFound as exc:
        raise _gone(checkpoint, "checkpoint file", exc) from exc
    except ArtifactMismatch as exc:
        raise _mismatch(checkpoint, exc.actual) from exc
    except ArtifactChanged as exc:
        raise _mismatch(checkpoint, "(replaced while it was read)") from exc
    return VerifiedCheckpoint(reader=reader, sha256=checkpoint.sha256, step=checkpoint.step,
                              filename=f"{checkpoint.job_id}-step{checkpoint.step}.safetensors")


def latest_meta(session: Session, owner: ApiKey, job_id: str, store: ArtifactStore) -> dict[str, Any]:
    """The metadata JSON written beside the latest checkpoint (spec, step, metrics, sha256, versions)."""
    checkpoint = _latest(session, owner, job_id)
    try:
        raw = read_small(store, meta_key(checkpoint.relpath), MAX_META_BYTES)
    except ArtifactNotFound as exc:
        raise _gone(checkpoint, "checkpoint metadata", exc) from exc
    except ValueError as exc:
        raise Gone(f"checkpoint metadata of job {checkpoint.job_id} is unreadable ({exc})",
                   code="checkpoint_missing") from exc
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise Gone(f"checkpoint metadata of job {checkpoint.job_id} is unreadable ({exc})",
                   code="checkpoint_missing") from exc
    if meta.get("sha256") != checkpoint.sha256:
        raise _mismatch(checkpoint, str(meta.get("sha256")))
    finite: dict[str, Any] = finite_or_none(meta)
    return finite
