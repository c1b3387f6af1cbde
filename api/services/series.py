"""One metric of several jobs for charts (the compare page), at full resolution or reduced.

Reduction is deterministic and keeps every spike: a series' step range is cut into `buckets` equal spans and
each span keeps its lowest and its highest point (the earlier on a tie), plus the series' first and last point,
so a chart of 2 * buckets points per series draws the same envelope as the full series. Never random sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from api.errors import InvalidInput
from api.services.jobs import get_jobs, valid_job_id
from core.db.models import ApiKey
from core.repositories import series as repo

MAX_JOBS = 500
MAX_POINTS_READ = 5_000_000  # one request's worth of rows; past it, ask for fewer jobs or a step range
_NONE = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))


@dataclass(frozen=True)
class JobSeries:
    job_id: str
    steps: list[int]
    values: list[float]


def parse_job_ids(raw: str) -> list[str]:
    """The comma-separated ids of `job_ids`, each once, in the order given."""
    ids = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not ids:
        raise InvalidInput([("query.job_ids", "name at least one job id")])
    if len(ids) > MAX_JOBS:
        raise InvalidInput([("query.job_ids", f"at most {MAX_JOBS} jobs per request, got {len(ids)}")])
    bad = next((i for i in ids if not valid_job_id(i)), None)
    if bad is not None:
        raise InvalidInput([("query.job_ids", f"{bad[:64]!r} is not a job id")])
    return ids


def reduce_min_max(steps: np.ndarray, values: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """The points of a step-ordered series that a min/max-per-bucket chart needs (see the module docstring)."""
    if len(steps) <= 2 * buckets + 2:
        return steps, values
    x, y = np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)
    bucket = (x - x[0]) * buckets // (x[-1] - x[0] + 1)
    # Within each bucket: sorted by value, ties by step (lexsort's last key is the primary one).
    low = np.lexsort((x, y, bucket))
    high = np.lexsort((x, -y, bucket))
    starts = np.flatnonzero(np.r_[True, np.diff(bucket[low]) != 0])
    keep = np.unique(np.r_[0, len(x) - 1, low[starts], high[starts]])
    return x[keep], y[keep]


def metric_series(session: Session, owner: ApiKey, job_ids: Sequence[str], metric: str, *,
                  from_step: int | None, to_step: int | None, points: int | None) -> list[JobSeries]:
    """Each job's series of `metric`, in the order asked; `points` bounds each series (2 per bucket)."""
    # 404 unless all are the caller's; a reused sweep config's series is the one of the job that trained it.
    trained = {job.id: job.reused_from or job.id for job in get_jobs(session, owner, job_ids)}
    if from_step is not None and to_step is not None and from_step > to_step:
        raise InvalidInput([("query.to_step", f"must be at least from_step ({from_step})")])
    found = repo.metric_series(session, list(dict.fromkeys(trained.values())), metric, from_step=from_step,
                               to_step=to_step, limit=MAX_POINTS_READ + 1)
    if sum(len(steps) for steps, _ in found.values()) > MAX_POINTS_READ:
        raise InvalidInput([("query.job_ids", f"these series hold more than {MAX_POINTS_READ} points in all; ask "
                             "for fewer jobs or a step range (from_step, to_step)")])
    result = []
    for job_id in job_ids:
        steps, values = found.get(trained[job_id], _NONE)
        if points is not None:
            steps, values = reduce_min_max(steps, values, max(1, points // 2))
        result.append(JobSeries(job_id, steps.tolist(), values.tolist()))
    return result
