"""A job's latest checkpoint, served only after its bytes are checked against the recorded sha256."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from api.errors import Conflict, Gone, NotFound
from api.services.jobs import get_job
from core.db.models import ApiKey, Checkpoint
from core.jsonvalues import finite_or_none
from core.repositories import jobs as jobs_repo

CHUNK = 1 << 20
MAX_META_BYTES = 16 << 20


@dataclass
class VerifiedCheckpoint:
    """An open checkpoint file whose bytes hash to `sha256`; serve from this handle, not the path.

    The trainer replaces checkpoint files by rename, so the open handle keeps the verified bytes even if a
    newer checkpoint lands while the download runs.
    """

    file: BinaryIO
    size: int
    sha256: str
    step: int
    filename: str


def _latest(session: Session, owner: ApiKey, job_id: str) -> Checkpoint:
    job = get_job(session, owner, job_id)
    checkpoint = jobs_repo.latest_checkpoint(session, job.id)
    if checkpoint is None:
        raise NotFound(f"job {job.id} has no checkpoint yet", code="checkpoint_not_found")
    return checkpoint


def _path(artifact_dir: Path, checkpoint: Checkpoint) -> Path:
    try:
        path = (artifact_dir / checkpoint.relpath).resolve()
    except (OSError, ValueError, RuntimeError):  # NUL in the path, a symlink loop
        path = None
    if path is None or not path.is_relative_to(artifact_dir):
        raise Gone(f"checkpoint of job {checkpoint.job_id} is not under the artifact directory",
                   code="checkpoint_missing")
    return path


def _mismatch(checkpoint: Checkpoint, actual: str) -> Conflict:
    return Conflict(
        f"checkpoint of job {checkpoint.job_id} at step {checkpoint.step} does not match its recorded sha256 "
        f"({actual} != {checkpoint.sha256}); a newer one may be being written, retry shortly",
        code="checkpoint_mismatch", headers={"Retry-After": "2"},
    )


def _open_regular(path: Path, checkpoint: Checkpoint, what: str) -> BinaryIO:
    """Open a plain file for reading; anything else at the path (gone, a directory, a FIFO that would block the
    read forever, unreadable) is a 410, never a crash or a hang."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise Gone(f"{what} of job {checkpoint.job_id} is missing or unreadable", code="checkpoint_missing") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Gone(f"{what} of job {checkpoint.job_id} is not a regular file", code="checkpoint_missing")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def etag(checkpoint_sha256: str) -> str:
    return f'"{checkpoint_sha256}"'


def latest_recorded(session: Session, owner: ApiKey, job_id: str) -> Checkpoint | None:
    """The latest checkpoint row of the caller's job (not read from disk), or None before the first."""
    return jobs_repo.latest_checkpoint(session, get_job(session, owner, job_id).id)


def latest_sha256(session: Session, owner: ApiKey, job_id: str) -> str:
    return _latest(session, owner, job_id).sha256


def open_latest(session: Session, owner: ApiKey, job_id: str, artifact_dir: Path) -> VerifiedCheckpoint:
    """Open the latest checkpoint and check its sha256; 410 when the file is gone, 409 on a mismatch."""
    checkpoint = _latest(session, owner, job_id)
    file = _open_regular(_path(artifact_dir, checkpoint), checkpoint, "checkpoint file")
    try:
        digest = hashlib.sha256()
        size = 0
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
        if digest.hexdigest() != checkpoint.sha256:
            raise _mismatch(checkpoint, digest.hexdigest())
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return VerifiedCheckpoint(file=file, size=size, sha256=checkpoint.sha256, step=checkpoint.step,
                              filename=f"{checkpoint.job_id}-step{checkpoint.step}.safetensors")


def latest_meta(session: Session, owner: ApiKey, job_id: str, artifact_dir: Path) -> dict[str, Any]:
    """The metadata JSON written beside the latest checkpoint (spec, step, metrics, sha256, versions)."""
    checkpoint = _latest(session, owner, job_id)
    with _open_regular(_path(artifact_dir, checkpoint).with_suffix(".json"), checkpoint,
                       "checkpoint metadata") as f:
        raw = f.read(MAX_META_BYTES + 1)
    try:
        if len(raw) > MAX_META_BYTES:
            raise ValueError("too large")
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
