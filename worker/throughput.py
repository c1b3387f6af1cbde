"""After a run: record how fast it went (the planner's FLOP count over the measured seconds) for run-time estimates.

A sample is best effort: a job that trained is never failed for want of one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.db.models import ThroughputSample
from core.queue import queue_for
from core.repositories import throughput as throughput_repo
from trainer.loop import TrainResult, resolve_device
from trainer.plan import compute_cost, describe, flops_between
from trainer.spec import JobSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunTiming:
    """Monotonic times of one attempt: claimed, training loop started (data loaded, model built), loop ended."""

    claimed: float
    loop_started: float | None
    start_step: int
    ended: float


def device_name(spec: JobSpec) -> str:
    import torch

    device = resolve_device(spec.device)
    return f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "cpu"


def measured_sample(job_id: str, spec: JobSpec, result: TrainResult, timing: RunTiming) -> ThroughputSample | None:
    """The sample of a completed attempt that ran at least one step; None otherwise."""
    if (result.status != "completed" or result.data_shape is None or timing.loop_started is None
            or result.step <= timing.start_step):
        return None
    seconds = timing.ended - timing.loop_started
    if seconds <= 0:
        return None
    net = describe(spec, result.data_shape)
    steps = result.step - timing.start_step
    flops = flops_between(spec, result.data_shape, net, timing.start_step, result.step)
    per_step = compute_cost(spec, result.data_shape, net).flops_per_step
    return ThroughputSample(queue=queue_for(spec), arch=spec.model.arch, device=device_name(spec), job_id=job_id,
                            steps=steps, flops=flops, flops_per_step=per_step, seconds=seconds,
                            setup_seconds=timing.loop_started - timing.claimed)


def throughput_writer(job_id: str, spec: JobSpec, result: TrainResult,
                      timing: RunTiming) -> Callable[[Session], None] | None:
    """A write of this attempt's sample into the caller's transaction (the one that sets the outcome, so no commit
    of its own), or None when there is none to record. Best effort, in a savepoint: a sample that cannot be
    written is rolled back alone and leaves the outcome in the transaction untouched."""
    def write(session: Session) -> None:
        try:
            sample = measured_sample(job_id, spec, result, timing)  # a new row each time the write is retried
            if sample is None:
                return
            with session.begin_nested():
                throughput_repo.record(session, sample)
        except Exception:  # the job succeeded; an estimate's sample is not worth failing or retrying it for
            log.warning("job %s: could not record its throughput sample", job_id, exc_info=True)

    if result.status != "completed" or timing.loop_started is None:
        return None
    return write
