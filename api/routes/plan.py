"""/v1/plan: what a job would be (counts, queue, estimated run time, warnings), without queueing it."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentKey, RuntimeDep, SessionDep
from api.routes import V1
from api.routes.jobs import SpecBody
from api.schemas import PlanOut, error_responses
from api.services import plan

router = APIRouter(prefix=f"{V1}/plan", tags=["plan"])


@router.post("", response_model=PlanOut, responses=error_responses(401, 413, 422, 429))
def plan_job(spec: SpecBody, session: SessionDep, key: CurrentKey, runtime: RuntimeDep) -> PlanOut:
    """Plan a job spec: width vs the paper's range, parameters, FLOPs, memory, checkpoint size, queue, run time."""
    return plan.plan(session, key, spec, runtime.settings, runtime.artifacts)
