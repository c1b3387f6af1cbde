"""The trainer callbacks of a worker run: batched metrics, checkpoint rows, heartbeats and cancel checks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from worker.job_store import JobStore


class JobProgress:
    """Implements trainer.loop's callbacks for one claimed attempt; every write is fenced by the JobStore.

    A LeaseLost raised from here propagates out of train(): a newer attempt owns the job, so this one stops.
    """

    def __init__(self, store: JobStore, *, flush_every: int, total_steps: int | None,
                 heartbeat_seconds: float = 1.0, flush_seconds: float = 1.0) -> None:
        self.store = store
        self.flush_every = flush_every
        self.total_steps = total_steps
        self.heartbeat_seconds = heartbeat_seconds
        self.flush_seconds = flush_seconds
        self.cancel_requested = False
        self.loop_started: float | None = None
        self.start_step = 0
        self.last_checkpoint: tuple[int, Path, str] | None = None
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._last_heartbeat = self._last_flush = time.monotonic()

    def on_start(self, total_steps: int, start_step: int) -> None:
        # Known only once the trainer has loaded the data (epochs x batches); progress and ETA need it early.
        self.total_steps = total_steps
        # The training loop starts now: the run's measured throughput counts from here (worker/throughput.py).
        self.loop_started = time.monotonic()
        self.start_step = start_step

    def on_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        self._pending.append((step, dict(metrics)))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def on_checkpoint(self, step: int, path: Path | str, meta: dict[str, Any]) -> None:
        path = Path(path)
        # The trainer knows the step count (epochs x batches) only once data is loaded; it rides on the meta.
        self.total_steps = meta.get("total_steps", self.total_steps)
        if meta.get("final"):
            # The run's last checkpoint: the runner records it with the outcome (JobStore.finish: published first,
            # then the pending points, the outcome and its row in one transaction): one commit fewer per job.
            return
        # Metrics up to the checkpoint are durable no later than the checkpoint is (one transaction): a resume
        # never leaves a gap. One commit instead of two for the pending points and the checkpoint's row.
        points, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        self.store.record_checkpoint(step, path, meta["sha256"], points=points, total_steps=self.total_steps)
        self.last_checkpoint = (step, path, meta["sha256"])

    def should_stop(self) -> bool:
        # The trainer asks often (about once a second); the database is asked at most once per heartbeat.
        now = time.monotonic()
        if now - self._last_heartbeat >= self.heartbeat_seconds:
            self._last_heartbeat = now
            # Batches are for fast training; a client following a job still sees it move every flush_seconds.
            if self._pending and now - self._last_flush >= self.flush_seconds:
                self.flush()
            self.cancel_requested = self.store.heartbeat()
        return self.cancel_requested

    def take_pending(self) -> list[tuple[int, dict[str, Any]]]:
        """The points not written yet, for the caller to write (the outcome's transaction takes the last ones)."""
        points, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        return points

    def flush(self) -> None:
        self.store.record_metrics(self.take_pending(), total_steps=self.total_steps)
