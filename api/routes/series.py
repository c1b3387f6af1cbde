"""/v1/series: one metric of several jobs at once, for overlaid charts (the dashboard's compare page)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CommittingRoute, CurrentKey, SessionDep
from api.routes import V1
from api.schemas import SeriesOut, SeriesPage, error_responses
from api.services import series

router = APIRouter(prefix=f"{V1}/series", tags=["jobs"], route_class=CommittingRoute)

Step = Annotated[int | None, Query(ge=0, le=2**31 - 1)]


@router.get("", response_model=SeriesPage, responses=error_responses(401, 404, 422, 429))
def get_series(
    session: SessionDep, key: CurrentKey,
    job_ids: Annotated[str, Query(max_length=series.MAX_JOBS * 65, description="comma-separated job ids")],
    metric: Annotated[str, Query(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")] = "train_loss",
    points: Annotated[int | None, Query(ge=4, le=20_000, description=(
        "reduce each series to about this many points: the step range is cut into points/2 buckets and each "
        "keeps its lowest and highest value, so spikes survive; omit for full resolution"))] = None,
    from_step: Step = None, to_step: Step = None,
) -> SeriesPage:
    """Each job's series of one metric, in the order of `job_ids`; other users' jobs are 404."""
    found = series.metric_series(session, key, series.parse_job_ids(job_ids), metric, from_step=from_step,
                                 to_step=to_step, points=points)
    return SeriesPage(metric=metric, points=points,
                      series=[SeriesOut(job_id=s.job_id, steps=s.steps, values=s.values) for s in found])
