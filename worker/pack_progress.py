"""The trainer callbacks of a pack (trainer.callbacks.PackCallbacks): each job's metrics, checkpoint rows, lease,
cancel and outcome written through its own JobStore, fenced by its own attempt, exactly as if it ran alone.

Writes are batched: one transaction carries every job's metric points (or heartbeats, or checkpoint rows), so a
pack of 49 configs costs the database what one job does, not 49 times that. Inside it each job's write is fenced
on its own; a job whose attempt no longer holds it is dropped from the pack while the others go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from core.db.models import JobStatus
from core.repositories import jobs as repo
from trainer.callbacks import Outcome, PackCallbacks, Poll, TrainResult
from worker.db_retry import with_retries
from worker.job_store import JobStore, LeaseLost
from worker.runner import final_checkpoint, record_failure

log = logging.getLogger(__name__)

T = TypeVar("T")


class PackProgress:
    """The claimed jobs of one pack task; `callbacks(job_ids)` is what train_pack drives for some of them."""

    def __init__(self, sessions: sessionmaker[Session], stores: Sequence[JobStore], *, flush_every: int,
                 max_attempts: int, lease_seconds: float, heartbeat_seconds: float = 1.0,
                 flush_seconds: float = 5.0) -> None:
        self.sessions = sessions
        self.live: dict[str, JobStore] = {store.job.id: store for store in stores}  # claimed, not yet ended
        self.flush_every, self.max_attempts, self.lease_seconds = flush_every, max_attempts, lease_seconds
        self.heartbeat_seconds, self.flush_seconds = heartbeat_seconds, flush_seconds
        self.statuses: dict[str, JobStatus | None] = {store.job.id: None for store in stores}
        self.total_steps: dict[str, int | None] = {}
        self.pending: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self.cancelled: set[str] = set()
        self.lost: set[str] = set()
        self._last_heartbeat = self._last_flush = time.monotonic()

    def callbacks(self, job_ids: Sequence[str]) -> PackCallbacks:
        return _PackView(self, list(job_ids))

    # ------------------------------------------------------------------------------------------- batched writes
    def _transaction(self, what: str, write: Callable[[Session], T]) -> T:
        """One transaction for the whole pack, retried through a database restart (each write is safe to repeat)."""
        def attempt() -> T:
            with self.sessions.begin() as session:
                return write(session)

        return with_retries(attempt, what=f"pack of {len(self.live)} jobs: {what}", budget_seconds=self.lease_seconds)

    def _lose(self, job_ids: set[str]) -> None:
        for job_id in job_ids:
            log.warning("job %s: its attempt no longer holds it; it leaves the pack", job_id)
            self.live.pop(job_id, None)
            self.pending.pop(job_id, None)
        self.lost |= job_ids

    def flush(self) -> None:
        batch = {job_id: points for job_id, points in self.pending.items() if points and job_id in self.live}
        self.pending = {}
        self._last_flush = time.monotonic()
        if not batch:
            return

        def write(session: Session) -> set[str]:
            return {job_id for job_id, points in batch.items()
                    if not self.live[job_id].write_metrics(session, points, total_steps=self.total_steps.get(job_id))}

        self._lose(self._transaction("record metrics", write))

    def heartbeat(self) -> None:
        """Renew every live job's lease (those waiting for their group too) and read their cancel flags."""
        stores = list(self.live.values())

        def write(session: Session) -> tuple[set[str], set[str]]:
            lost = {s.job.id for s in stores if not s.write_heartbeat(session)}
            return lost, repo.cancels_requested(session, [s.job.id for s in stores if s.job.id not in lost])

        lost, self.cancelled = self._transaction("heartbeat", write)
        self._lose(lost)

    def record_checkpoints(self, saved: Mapping[str, tuple[int, Path, str]]) -> None:
        # Every metric point up to these steps is stored first: a resume never leaves a gap.
        self.flush()
        rows = {job_id: row for job_id, row in saved.items() if job_id in self.live}
        # Each checkpoint is in the artifact store before its row points at it (as for a lone job).
        keys = {job_id: self.live[job_id].publish_checkpoint(*row) for job_id, row in rows.items()}

        def write(session: Session) -> set[str]:
            return {job_id for job_id, row in rows.items() if not self.live[job_id].write_checkpoint(session, *row)}

        lost = self._transaction("record checkpoints", write)
        self._lose(lost)
        for job_id, key in keys.items():
            if job_id not in lost and job_id in self.live:
                self.live[job_id].prune_older(key)

    def poll(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat < self.heartbeat_seconds:
            return
        self._last_heartbeat = now
        # Batches are for fast training; a slow pack still shows its progress within flush_seconds.
        if now - self._last_flush >= self.flush_seconds:
            self.flush()
        self.heartbeat()

    # ------------------------------------------------------------------------------------------------ outcomes
    def end(self, job_id: str, outcome: Outcome | Exception) -> None:
        """Write a job's outcome through its own store, as run_job does for a lone job."""
        store = self.live.get(job_id)
        if store is None:
            return
        self.flush()  # the points recorded before the outcome
        try:
            if isinstance(outcome, TrainResult) and outcome.status == "completed":
                store.finish(JobStatus.SUCCEEDED, step=outcome.step, total_steps=outcome.total_steps,
                             final_metrics=outcome.final_metrics, final_checkpoint=final_checkpoint(outcome))
                status = JobStatus.SUCCEEDED
            elif isinstance(outcome, TrainResult):  # stopped: only a cancel does that; the last checkpoint stays
                store.finish(JobStatus.CANCELLED, step=outcome.step, total_steps=outcome.total_steps)
                status = JobStatus.CANCELLED
            else:
                status = record_failure(store.job, store, outcome, self.max_attempts)
        except LeaseLost as exc:
            log.warning("%s; its outcome is not ours to write", exc)
            self._lose({job_id})
            return
        self.statuses[job_id] = status
        self.live.pop(job_id, None)


class _PackView(PackCallbacks):
    """train_pack's callbacks for the jobs `job_ids` of a PackProgress (positions are indices into it)."""

    def __init__(self, pack: PackProgress, job_ids: list[str]) -> None:
        self.pack, self.job_ids = pack, job_ids

    def on_start(self, total_steps: int, start_steps: Sequence[int]) -> None:
        # Known only once the trainer has loaded the data (epochs x batches); progress and ETA need it early.
        for job_id in self.job_ids:
            self.pack.total_steps[job_id] = total_steps

    def on_metrics(self, step: int, metrics: Mapping[int, dict[str, float]]) -> None:
        for position, values in metrics.items():
            self.pack.pending.setdefault(self.job_ids[position], []).append((step, dict(values)))
        if max(map(len, self.pack.pending.values()), default=0) >= self.pack.flush_every:
            self.pack.flush()

    def on_checkpoints(self, step: int, saved: Mapping[int, tuple[Path, dict[str, Any]]]) -> None:
        self.pack.record_checkpoints({self.job_ids[position]: (step, path, meta["sha256"])
                                      for position, (path, meta) in saved.items()})

    def poll(self) -> Poll:
        self.pack.poll()
        positions = {job_id: position for position, job_id in enumerate(self.job_ids)}
        return Poll(stop=frozenset(positions[j] for j in self.pack.cancelled if j in positions),
                    drop=frozenset(positions[j] for j in self.pack.lost if j in positions))

    def on_end(self, config: int, outcome: Outcome) -> None:
        self.pack.end(self.job_ids[config], outcome)
