"""A job's step budget and metric cadence as pure integer arithmetic (no torch).

The learners take their step counts from here, and so does the planner (trainer/plan), so a plan's step count is
the one the run will have.
"""

from __future__ import annotations

import math

from trainer.spec import JobSpec, ResNet18Model


def steps_per_epoch(n: int, batch_size: int | None, *, drop_single: bool = False) -> int:
    """ceil(n / b) batches (1 for full batch); with BatchNorm (drop_single) a last batch of one sample is dropped,
    since its batch statistics are undefined."""
    if batch_size is None or batch_size >= n:
        return 1
    if drop_single and n % batch_size == 1:
        return n // batch_size
    return math.ceil(n / batch_size)


def drops_single_batches(spec: JobSpec) -> bool:
    """ResNet-18's BatchNorm cannot take a batch of one sample."""
    return isinstance(spec.model, ResNet18Model)


def epoch_steps(spec: JobSpec, n: int) -> int:
    return steps_per_epoch(n, spec.optim.batch_size, drop_single=drops_single_batches(spec))


def total_steps(spec: JobSpec, n: int) -> int:
    return spec.optim.total_steps(epoch_steps(spec, n))


def rows_per_step(spec: JobSpec, n: int) -> float:
    """Samples one step sees, on average over an epoch (a shorter last batch included, a dropped one not)."""
    b = spec.optim.batch_size
    if b is None or b >= n:
        return float(n)
    dropped = drops_single_batches(spec) and n % b == 1
    return (n - 1 if dropped else n) / epoch_steps(spec, n)


def metric_records(spec: JobSpec, n: int, start: int, end: int) -> int:
    """How many metric records trainer.loop.train makes for steps in (start, end], plus the one at step 0 when
    start == 0: every metrics_every steps, at the last step, and at every epoch's end when training by epochs."""
    total = total_steps(spec, n)
    per_epoch = epoch_steps(spec, n)
    every = spec.metrics_every

    def upto(s: int) -> int:  # records at steps 1..s
        count = s // every
        if spec.optim.epochs is not None:
            both = every * per_epoch // math.gcd(every, per_epoch)
            count += s // per_epoch - s // both
        if s >= total and total % every and not (spec.optim.epochs is not None and total % per_epoch == 0):
            count += 1  # the last step, when no other rule already records it
        return count

    return upto(end) - upto(start) + (1 if start == 0 else 0)
