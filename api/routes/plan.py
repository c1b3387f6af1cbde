"""/v1/plan: what a job or a sweep would be (counts, queue, estimated run time, packs, warnings), queueing nothing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.deps import CommittingRoute, CurrentKey, RuntimeDep, SessionDep
from api.routes import V1
from api.routes.jobs import SPEC_EXAMPLES, ReuseHeader
from api.routes.sweeps import SWEEP_EXAMPLES
from api.schemas import PlanOut, error_responses
from api.services import plan, sweep_plan
from api.sweep_schemas import SweepPlanOut
from trainer.grid import SweepFile
from trainer.spec import JobSpec

router = APIRouter(prefix=f"{V1}/plan", tags=["plan"], route_class=CommittingRoute)

# The body is a job spec or a sweep file, told apart by the sweep's "grid"; each is validated as its own submit
# route validates it, so the 422s are the same field for field.
_BODY_SCHEMA = {"oneOf": [{"$ref": "#/components/schemas/JobSpec"}, {"$ref": "#/components/schemas/SweepFile"}]}
PlanBody = Annotated[dict[str, Any], Body(openapi_examples={**SPEC_EXAMPLES, **SWEEP_EXAMPLES})]


def parse(body: dict[str, Any]) -> JobSpec | SweepFile:
    model: type[JobSpec | SweepFile] = SweepFile if "grid" in body else JobSpec
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=body) from None


@router.post("", response_model=PlanOut | SweepPlanOut, responses=error_responses(401, 413, 422, 429),
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": _BODY_SCHEMA}}}})
def plan_job(body: PlanBody, session: SessionDep, key: CurrentKey, runtime: RuntimeDep,
             reuse: ReuseHeader = None) -> PlanOut | SweepPlanOut:
    """Plan a job spec (width vs the paper's range, parameters, FLOPs, memory, checkpoint size, queue, run time) or
    a sweep (each config's plan, totals, packs and why configs train apart; 'Reuse: succeeded' leaves out configs
    you already trained)."""
    parsed = parse(body)
    if isinstance(parsed, SweepFile):
        return sweep_plan.plan_sweep(session, key, parsed, runtime.settings, runtime.artifacts,
                                     reuse=reuse == "succeeded")
    return plan.plan(session, key, parsed, runtime.settings, runtime.artifacts)
