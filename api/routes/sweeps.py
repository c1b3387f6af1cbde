"""/v1/sweeps: submit a grid, list, read, cancel, results (JSON or CSV), the Figure-4 summary and its heatmap."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import JSONResponse

from api.deps import CommittingRoute, CurrentKey, RuntimeDep, SessionDep
from api.routes import V1
from api.routes.jobs import DryRun, IdempotencyKey, ReuseHeader
from api.schemas import error_responses
from api.services import sweep_heatmap, sweep_plan, sweep_tables, sweeps
from api.sweep_schemas import ConfigResult, SweepCreated, SweepOut, SweepPage, SweepPlanOut, SweepResults, SweepSummary
from core.db.models import utcnow
from trainer.grid import SweepFile

router = APIRouter(prefix=f"{V1}/sweeps", tags=["sweeps"], route_class=CommittingRoute)

SWEEP_EXAMPLES = {
    "figure4-small": {"summary": "a small Figure-4 grid: 2 regimes x 2 radii x 2 x 2 learning rates", "value": {
        "name": "figure4-small",
        "base": {"name": "fig4", "regime": "constrained", "model": {"arch": "shallow", "width": 8},
                 "data": {"source": "synthetic", "n": 32, "d": 4},
                 "optim": {"name": "gd", "momentum": 0.9, "lr": 0.1, "iterations": 50}, "metrics_every": 10},
        "grid": {"regime": ["regular", "constrained"], "constraint.radius": [1.0, None],
                 "optim.lr_hidden": [0.05, 0.5], "optim.lr_outer": [0.05, 0.5]},
        "objective": {"metric": "train_loss", "mode": "min"},
    }},
}
SweepBody = Annotated[SweepFile, Body(openapi_examples=SWEEP_EXAMPLES)]
Axis = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_][a-z0-9_.]*$", description="a grid axis")]
Metric = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_]+$", description="default: the objective's")]
Reduce = Annotated[Literal["min", "max"] | None, Query(description="default: the objective's mode")]


@router.post("", status_code=201, response_model=SweepCreated,
             responses={200: {"model": SweepCreated | SweepPlanOut,
                              "description": "replay of an Idempotency-Key submission, or with dry_run=true the plan"},
                        **error_responses(401, 409, 413, 422, 429)})
def submit_sweep(body: SweepBody, session: SessionDep, key: CurrentKey, runtime: RuntimeDep, response: Response,
                 idempotency_key: IdempotencyKey = None, reuse: ReuseHeader = None,
                 dry_run: DryRun = False) -> SweepCreated | JSONResponse:
    """Submit a sweep: the grid's cartesian product applied to `base`, one job per config, trained in packs. With
    'Reuse: succeeded', configs you already trained point at those jobs (reused_from) and only the rest train."""
    if dry_run:
        answer = sweep_plan.plan_sweep(session, key, body, runtime.settings, runtime.artifacts,
                                       reuse=reuse == "succeeded")
        return JSONResponse(answer.model_dump(mode="json"))
    submission = sweeps.submit_sweep(session, key, body, idempotency_key=idempotency_key,
                                     settings=runtime.settings, enqueue_pack=runtime.enqueue_pack,
                                     reuse_from=runtime.artifacts if reuse == "succeeded" else None)
    response.headers["Location"] = f"/v1/sweeps/{submission.sweep.id}"
    if not submission.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return sweeps.created_out(session, submission, utcnow())


@router.get("", response_model=SweepPage, responses=error_responses(401, 422, 429))
def list_sweeps(session: SessionDep, key: CurrentKey, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> SweepPage:
    """Your sweeps, newest first, with their status and progress."""
    items, total = sweeps.list_sweeps(session, key, limit=limit, offset=offset)
    return SweepPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/{sweep_id}", response_model=SweepOut, responses=error_responses(401, 404, 429))
def get_sweep(sweep_id: str, session: SessionDep, key: CurrentKey) -> SweepOut:
    """One sweep: status, counts per job status, progress, ETA and the best config so far."""
    return sweeps.sweep_out(session, sweeps.get_sweep(session, key, sweep_id), utcnow())


@router.post("/{sweep_id}/cancel", response_model=SweepOut, responses=error_responses(401, 404, 429))
def cancel_sweep(sweep_id: str, session: SessionDep, key: CurrentKey) -> SweepOut:
    """Cancel every unfinished config (idempotent): queued ones at once, running ones within seconds."""
    return sweeps.sweep_out(session, sweeps.cancel_sweep(session, key, sweep_id), utcnow())


@router.get("/{sweep_id}/results", response_model=SweepResults,
            responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with ?format=csv"},
                       **error_responses(401, 404, 422, 429)})
def sweep_results(sweep_id: str, session: SessionDep, key: CurrentKey,
                  format: Literal["json", "csv"] = "json") -> Any:
    """One row per config: its grid values, job id, status and final metrics (non-finite values are null)."""
    sweep, configs = sweeps.results(session, key, sweep_id)
    if format == "csv":
        return Response(sweep_tables.results_csv(sweep.axes, configs), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="sweep-{sweep.id}.csv"'})
    return SweepResults(sweep_id=sweep.id, axes=sweep.axes,
                        objective={"metric": sweep.objective_metric, "mode": sweep.objective_mode},
                        items=[ConfigResult(**sweep_tables.result_row(c)) for c in configs])


@router.get("/{sweep_id}/summary", response_model=SweepSummary, responses=error_responses(401, 404, 422, 429))
def sweep_summary(sweep_id: str, session: SessionDep, key: CurrentKey, rows: Axis = None, cols: Axis = None,
                  split: Axis = None, metric: Metric = None, reduce: Reduce = None) -> dict[str, Any]:
    """The Figure-4 table: per (split, row, col) cell the best value over the other axes and its job."""
    return sweeps.summary(session, key, sweep_id, rows=rows, cols=cols, split=split, metric=metric, reduce=reduce)


def _image(fmt: Literal["png", "svg"]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {sweep_heatmap.MEDIA_TYPES[fmt]: {}}, "description": "the heatmap"},
            **error_responses(401, 404, 422, 429)}


@router.get("/{sweep_id}/heatmap.png", response_class=Response, responses=_image("png"))
def sweep_heatmap_png(sweep_id: str, session: SessionDep, key: CurrentKey, rows: Axis = None, cols: Axis = None,
                      split: Axis = None, metric: Metric = None, reduce: Reduce = None) -> Response:
    """The summary drawn as a PNG heatmap: a panel per split value, log-scale colour, values in the cells."""
    image = sweeps.heatmap(session, key, sweep_id, "png", rows=rows, cols=cols, split=split, metric=metric,
                           reduce=reduce)
    return Response(image, media_type=sweep_heatmap.MEDIA_TYPES["png"])


@router.get("/{sweep_id}/heatmap.svg", response_class=Response, responses=_image("svg"))
def sweep_heatmap_svg(sweep_id: str, session: SessionDep, key: CurrentKey, rows: Axis = None, cols: Axis = None,
                      split: Axis = None, metric: Metric = None, reduce: Reduce = None) -> Response:
    """The summary drawn as an SVG heatmap."""
    image = sweeps.heatmap(session, key, sweep_id, "svg", rows=rows, cols=cols, split=split, metric=metric,
                           reduce=reduce)
    return Response(image, media_type=sweep_heatmap.MEDIA_TYPES["svg"])
