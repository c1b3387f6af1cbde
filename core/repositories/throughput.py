"""Queries for throughput samples: what workers measured (FLOPs in seconds), per queue and architecture."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.db.models import ThroughputSample

WINDOW = 50  # samples kept per (queue, arch): the estimate follows the recent hardware and load


def record(session: Session, sample: ThroughputSample) -> None:
    """Add a sample and drop those of its (queue, arch) older than the newest WINDOW."""
    session.add(sample)
    session.flush()
    newest = (select(ThroughputSample.id)
              .where(ThroughputSample.queue == sample.queue, ThroughputSample.arch == sample.arch)
              .order_by(ThroughputSample.recorded_at.desc(), ThroughputSample.id.desc()).limit(WINDOW))
    session.execute(delete(ThroughputSample)
                    .where(ThroughputSample.queue == sample.queue, ThroughputSample.arch == sample.arch,
                           ThroughputSample.id.not_in(newest.scalar_subquery()))
                    .execution_options(synchronize_session=False))


def recent(session: Session, queue: str, arch: str) -> Sequence[ThroughputSample]:
    """The window of samples for (queue, arch), newest first."""
    return session.scalars(
        select(ThroughputSample).where(ThroughputSample.queue == queue, ThroughputSample.arch == arch)
        .order_by(ThroughputSample.recorded_at.desc(), ThroughputSample.id.desc()).limit(WINDOW)
    ).all()
