"""One attempt's files: the local run directory the trainer works in, the artifact store, the dataset cache.

The trainer reads and writes a local directory only (work_dir/jobs/<id>); the store is what outlives the
host. Every checkpoint is published (weights, then the metadata JSON that holds their sha256) under a key of
this attempt before the database records it, and a resume on any host starts from the newest recorded
checkpoint that verifies, fetched from the store when this host does not hold it already.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from core.artifacts.errors import ArtifactMismatch, ArtifactNotFound
from core.artifacts.keys import checkpoint_key, dataset_key, job_prefix, meta_key
from core.artifacts.store import ArtifactStore
from core.artifacts.verified import fetch_verified, read_small
from trainer.checkpoint import CheckpointError, checkpoint_paths, sha256_file
from trainer.checkpoint_format import FORMAT, KEEP_LATEST
from trainer.data.errors import DataError

log = logging.getLogger(__name__)

MAX_META_BYTES = 16 << 20


@dataclass(frozen=True)
class Recorded:
    """A checkpoint the database recorded: where its weights are in the store and what they hash to."""

    step: int
    key: str
    sha256: str


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.part")
    tmp.write_bytes(data)
    tmp.replace(target)


def _local_meta_sha256(meta_path: Path) -> str | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    return meta.get("sha256") if isinstance(meta, dict) else None


class JobArtifacts:
    def __init__(self, store: ArtifactStore, work_dir: Path, job_id: str, attempt: int) -> None:
        self.store, self.work_dir, self.job_id, self.attempt = store, work_dir, job_id, attempt

    @property
    def run_dir(self) -> Path:
        return self.work_dir / "jobs" / self.job_id

    # ------------------------------------------------------------------------------------------------ datasets
    def dataset(self, dataset_id: str, sha256: str) -> Path:
        """A local copy of an upload, from the cache keyed by its content hash: a resume, a retry or another job
        on the same data does not download it again. Fetched whole and verified, or not at all."""
        cached = self.work_dir / "cache" / "datasets" / f"{sha256}.npz"
        if cached.is_file():
            return cached
        try:
            fetch_verified(self.store, dataset_key(dataset_id), cached, sha256)
        except ArtifactMismatch as exc:
            raise DataError("data.id", f"the stored upload does not match its sha256 ({exc})") from exc
        except ArtifactNotFound as exc:
            raise DataError("data.id", f"the upload is missing from the artifact store ({exc})") from exc
        return cached

    # --------------------------------------------------------------------------------------------- checkpoints
    def publish(self, step: int, weights: Path) -> str:
        """Put a checkpoint the trainer wrote into the store; return its key. The metadata goes last: an object
        pair without it is incomplete, and without its database row it is never read."""
        key = checkpoint_key(self.job_id, self.attempt, step)
        self.store.put_files([(key, weights), (meta_key(key), weights.with_suffix(".json"))])
        return key

    def prepare(self, recorded: list[Recorded]) -> Recorded | None:
        """Make the run directory hold what a resume may start from, and nothing else; return the checkpoint it
        will resume from (None: from scratch).

        Files and objects no row records are deleted: their attempt died (or was fenced out) between writing
        and recording them, and resuming from one would leave the metric points before it missing for good.
        Then the newest recorded checkpoint that verifies is made present; one whose stored bytes do not match
        their sha256 is skipped for the one before, and when none verifies the job fails (CheckpointError).
        """
        newest = {r.step: r for r in recorded}  # a step recorded twice: the later row
        self._drop_local(newest)
        self._delete_unrecorded(recorded)
        errors = []
        for candidate in sorted(newest.values(), key=lambda r: r.step, reverse=True):
            try:
                if not self._held_locally(candidate):
                    self._fetch(candidate)
                return candidate
            except (ArtifactMismatch, ArtifactNotFound, CheckpointError) as exc:
                log.warning("job %s: recorded checkpoint at step %d cannot be resumed from: %s", self.job_id,
                            candidate.step, exc)
                errors.append(str(exc))
                for path in checkpoint_paths(self.run_dir, candidate.step):
                    path.unlink(missing_ok=True)
        if errors:
            raise CheckpointError("no recorded checkpoint verifies: " + "; ".join(errors))
        return None

    def prune(self, recorded_keys: list[str]) -> list[str]:
        """Delete the store's copies of all but the newest KEEP_LATEST recorded checkpoints (as the trainer does
        in its run directory); return the keys kept. Best effort: what a failure leaves is pruned next time."""
        for key in recorded_keys[:-KEEP_LATEST]:
            for each in (meta_key(key), key):  # the metadata first: without it the pair is not a checkpoint
                self.store.delete(each)
        return recorded_keys[-KEEP_LATEST:]

    def _drop_local(self, newest: dict[int, Recorded]) -> None:
        if not self.run_dir.is_dir():
            return
        for meta in self.run_dir.glob("ckpt-*.json"):
            step = int(meta.stem.removeprefix("ckpt-"))
            row = newest.get(step)
            if row is None or _local_meta_sha256(meta) != row.sha256:
                log.warning("job %s: checkpoint file at step %d was never recorded; not resuming from it",
                            self.job_id, step)
                for path in checkpoint_paths(self.run_dir, step):
                    path.unlink(missing_ok=True)

    def _delete_unrecorded(self, recorded: list[Recorded]) -> None:
        referenced = {key for r in recorded for key in (r.key, meta_key(r.key))}
        for key in self.store.keys(job_prefix(self.job_id)):
            if key not in referenced and key.endswith((".safetensors", ".json")):
                log.warning("job %s: %s was never recorded; deleting it from the store", self.job_id, key)
                self.store.delete(key)

    def _held_locally(self, row: Recorded) -> bool:
        weights, meta = checkpoint_paths(self.run_dir, row.step)
        return (meta.is_file() and weights.is_file() and _local_meta_sha256(meta) == row.sha256
                and sha256_file(weights) == row.sha256)

    def _fetch(self, row: Recorded) -> None:
        weights, meta_path = checkpoint_paths(self.run_dir, row.step)
        try:
            raw = read_small(self.store, meta_key(row.key), MAX_META_BYTES)
            meta = json.loads(raw)
        except ValueError as exc:
            raise CheckpointError(f"{meta_key(row.key)}: unreadable metadata ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("sha256") != row.sha256:
            raise CheckpointError(f"{meta_key(row.key)}: metadata does not match the recorded checkpoint")
        try:
            fetch_verified(self.store, row.key, weights, row.sha256)
        except ArtifactMismatch as exc:
            raise CheckpointError(f"checkpoint {exc}") from exc
        _atomic_write_bytes(meta_path, raw)  # last: the trainer's commit marker
        log.info("job %s: fetched the checkpoint at step %d from %s", self.job_id, row.step, self.store.location)
