"""The worker's writes for one claimed attempt: fenced by the attempt, each retried through a database or
artifact store restart.

The queries live in core.repositories.jobs; this is the shell around them. Each write is its own short
transaction, so the API never waits on a training run, and each is safe to repeat, so a restart is ridden out
by retrying (db_retry). A fenced write that matches no row raises LeaseLost: a newer attempt (or a final state
set elsewhere, or the reconciler) owns the job, and this attempt stops writing.

Files go through JobArtifacts (job_artifacts.py): a checkpoint is published to the artifact store before its
row is written, outside any transaction, so a row always points at a complete object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from core.artifacts.errors import StoreUnavailable
from core.artifacts.store import ArtifactStore
from core.db.models import JobStatus, utcnow
from core.jsonvalues import finite_or_none
from core.repositories import datasets as datasets_repo
from core.repositories import jobs as repo
from core.repositories import series
from core.repositories.jobs import ClaimedJob
from worker.db_retry import with_retries
from worker.job_artifacts import JobArtifacts, Recorded

log = logging.getLogger(__name__)

T = TypeVar("T")


class LeaseLost(Exception):
    """A newer attempt owns the job (or it reached a final state elsewhere): stop writing."""


class JobStore:
    """Fenced writes for one claimed attempt of one job, each retried through a database restart."""

    def __init__(self, sessions: sessionmaker[Session], job: ClaimedJob, *, lease_seconds: float,
                 artifacts: ArtifactStore, work_dir: Path, pack_min_points: int = 0) -> None:
        self.sessions = sessions
        self.job = job
        self.lease_seconds = lease_seconds
        self.pack_min_points = pack_min_points  # Settings.series_pack_min_points
        # The last step whose points were written (a resumed attempt starts from its checkpoint's).
        self.last_step = max((step for step, _, _ in job.checkpoints), default=0)
        self.files = JobArtifacts(artifacts, work_dir, job.id, job.attempt)
        self._published: dict[tuple[int, str], str] = {}  # (step, sha256) -> key of checkpoints in the store
        self._kept: list[str] = []  # keys of the recorded checkpoints still in the store, oldest first

    def _retrying(self, what: str, write: Callable[[], T]) -> T:
        # Budget = the lease: a write that lands later than that may find the job already handed on.
        return with_retries(write, what=f"job {self.job.id} attempt {self.job.attempt}: {what}",
                            budget_seconds=self.lease_seconds)

    def _fenced(self, held: bool) -> None:
        if not held:
            raise LeaseLost(f"job {self.job.id}: attempt {self.job.attempt} no longer holds the job")

    def _fenced_update(self, session: Session, **values: Any) -> None:
        self._fenced(repo.fenced_update(session, self.job.id, self.job.attempt, **values))

    def _lease(self) -> dict[str, Any]:
        return {"lease_expires_at": utcnow() + timedelta(seconds=self.lease_seconds)}

    def dataset_path(self, dataset_id: str) -> Path:
        """A local copy of a dataset the job's owner has (the API checked it; we check again)."""
        def read() -> tuple[str, str] | None:
            with self.sessions() as session:
                return datasets_repo.owner_and_sha256(session, dataset_id)

        found = self._retrying("read its dataset", read)
        if found is None or found[0] != self.job.owner_id:
            raise LookupError(f"data.id: dataset {dataset_id} not found")
        return self._retrying("fetch its dataset", lambda: self.files.dataset(dataset_id, found[1]))

    def prepare_run_dir(self) -> Path:
        """The local run directory, holding the newest recorded checkpoint that verifies (fetched from the store
        if this host lacks it) and no checkpoint the database never recorded; see JobArtifacts.prepare.

        The recorded checkpoints are those the claim read in its transaction: any later row is this attempt's."""
        recorded = [Recorded(step, key, sha256) for step, key, sha256 in self.job.checkpoints]
        resumed = self._retrying("restore its run directory", lambda: self.files.prepare(recorded))
        if resumed is not None:
            self._published[(resumed.step, resumed.sha256)] = resumed.key
        self._kept = [r.key for r in recorded]
        return self.files.run_dir

    def publish_checkpoint(self, step: int, path: Path, sha256: str) -> str:
        """Put a checkpoint the trainer wrote into the store (once); return its key. Before its row is written."""
        if (step, sha256) not in self._published:
            key = self._retrying("publish a checkpoint", lambda: self.files.publish(step, path))
            self._published[(step, sha256)] = key
        return self._published[(step, sha256)]

    # Writes inside a caller's transaction (a pack batches all its jobs' writes into one): False = lease lost,
    # and nothing of this job was written.
    def write_heartbeat(self, session: Session) -> bool:
        return repo.fenced_update(session, self.job.id, self.job.attempt, **self._lease())

    def write_metrics(self, session: Session, points: list[tuple[int, dict[str, Any]]], *,
                      total_steps: int | None) -> bool:
        """Progress on the job row, then the points, at most once per step."""
        step, latest = points[-1]
        progress: dict[str, Any] = {"step": step, "latest_metrics": finite_or_none(latest)}
        if total_steps is not None:
            progress["total_steps"] = total_steps
        if not repo.fenced_update(session, self.job.id, self.job.attempt, **progress, **self._lease()):
            return False
        repo.insert_metric_points(session, self.job.id, self.job.attempt, points)
        self.last_step = step
        return True

    def write_checkpoint(self, session: Session, step: int, path: Path, sha256: str) -> bool:
        if not self.write_heartbeat(session):
            return False
        self._checkpoint_row(session, step, path, sha256, final=False)
        return True

    # Writes in a transaction of their own, retried; LeaseLost when the lease is lost.
    def heartbeat(self) -> bool:
        """Renew the lease; return whether a cancel was requested."""
        def write() -> bool:
            with self.sessions.begin() as session:
                self._fenced(self.write_heartbeat(session))
                return repo.cancel_requested(session, self.job.id)

        return self._retrying("heartbeat", write)

    def record_metrics(self, points: list[tuple[int, dict[str, Any]]], *, total_steps: int | None) -> None:
        """One transaction per batch: progress on the job row, then the points, at most once per step."""
        if not points:
            return

        def write() -> None:
            with self.sessions.begin() as session:
                self._fenced(self.write_metrics(session, points, total_steps=total_steps))

        self._retrying("record metrics", write)

    def _checkpoint_row(self, session: Session, step: int, path: Path, sha256: str, final: bool) -> None:
        key = self._published[(step, sha256)]  # KeyError: a row for a checkpoint never published is a bug
        # A final row is written with the outcome (finish), whose fenced update stops a retry after a commit that
        # landed; and _kept holds the key of every row recorded when the job was claimed and of the newest this
        # attempt committed. So a final checkpoint whose key is not in it has no row yet: nothing to look up.
        new = final and key not in self._kept
        repo.record_checkpoint(session, self.job.id, self.job.attempt, step=step, relpath=key,
                               sha256=sha256, size_bytes=path.stat().st_size, final=final, new=new)

    def record_checkpoint(self, step: int, path: Path, sha256: str, *,
                          points: list[tuple[int, dict[str, Any]]] | None = None,
                          total_steps: int | None = None) -> None:
        """Publish the checkpoint; then, in one transaction, the metric points up to it (if any are pending) and
        its row: the row never exists without the points before it. Then drop the store's older copies."""
        key = self.publish_checkpoint(step, path, sha256)

        def write() -> None:
            with self.sessions.begin() as session:
                if points:
                    self._fenced(self.write_metrics(session, points, total_steps=total_steps))
                self._fenced(self.write_checkpoint(session, step, path, sha256))

        self._retrying("record a checkpoint", write)
        self.prune_older(key)

    def prune_older(self, recorded: str) -> None:
        """Drop the store's copies of checkpoints older than the newest kept ones, now that `recorded` has its row."""
        try:
            self._kept = self.files.prune([*self._kept, recorded])
        except StoreUnavailable as exc:  # the next checkpoint, or the next attempt, deletes them
            log.warning("job %s: could not prune older checkpoints from the store (%s)", self.job.id, exc)
            self._kept.append(recorded)

    def release_for_retry(self, error: str) -> None:
        """Put the job back in the queue after a failed attempt that may succeed another time.

        It is sent again by the reconciler once it has waited lease_seconds: a pause before the next attempt.
        """
        def write() -> None:
            with self.sessions.begin() as session:
                self._fenced_update(session, status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None,
                                    error=error)

        self._retrying("release for a retry", write)

    def finish(self, status: JobStatus, *, step: int | None = None,
               total_steps: int | None = None, final_metrics: dict[str, Any] | None = None,
               error: str | None = None, final_checkpoint: tuple[int, Path, str] | None = None,
               points: list[tuple[int, dict[str, Any]]] | None = None,
               also: Callable[[Session], None] | None = None) -> None:
        """Set the outcome in one transaction with the metric points not written yet, the job's series packed for
        charts (core/repositories/series.py) and, on success, the final checkpoint's row (published to the store
        before it: the row never points at a file that could be lost, nor exists without the points before it);
        `also` writes more into it once the outcome is written (it must leave the transaction usable whatever
        happens: a savepoint)."""
        # error=None also clears the reason an earlier attempt failed with.
        values: dict[str, Any] = {"status": status, "lease_owner": None, "lease_expires_at": None,
                                  "finished_at": utcnow(), "error": error}
        if step is not None:
            values["step"] = step
        if total_steps is not None:
            values["total_steps"] = total_steps
        if final_metrics is not None:
            values["final_metrics"] = finite_or_none(final_metrics)
        if points:
            values["latest_metrics"] = finite_or_none(points[-1][1])  # as record_metrics would have set it

        key = None if final_checkpoint is None else self.publish_checkpoint(*final_checkpoint)
        pack = self._worth_packing(step if step is not None else points[-1][0] if points else self.last_step)

        def write() -> None:
            with self.sessions.begin() as session:
                self._fenced_update(session, **values)
                if points:
                    repo.insert_metric_points(session, self.job.id, self.job.attempt, points)
                if pack:
                    series.store_series(session, self.job.id)  # its points are final now
                if final_checkpoint is not None:
                    self._checkpoint_row(session, *final_checkpoint, final=True)
                if also is not None:
                    also(session)

        try:
            self._retrying("set the outcome", write)
        except LeaseLost:
            # A commit whose answer was lost with the connection may have landed: then the outcome is ours.
            if not self._ended_as(status):
                raise
        if key is not None and key not in self._kept:  # a new row (not a resumed, already recorded checkpoint)
            self.prune_older(key)

    def _worth_packing(self, last_step: int) -> bool:
        """Whether the job's points, about one per metrics_every steps up to `last_step`, reach pack_min_points
        (a guess that costs no query: a job packed or not is charted the same, only faster or slower)."""
        every = int(self.job.spec.get("metrics_every") or 1)
        return last_step // every + 1 >= self.pack_min_points

    def _ended_as(self, status: JobStatus) -> bool:
        with self.sessions() as session:
            return repo.status_and_attempt(session, self.job.id) == (status, self.job.attempt)
