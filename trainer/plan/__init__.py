"""Plan a job without running it: counted from its spec and its data's shape, never by building the net (no torch).

    shape = data_shape(spec.data, uploaded)          # None for a local .npz
    plan = plan_job(spec, shape, device="cpu")       # JobPlan: width, parameters, compute, memory, checkpoint, advice
    flops_between(spec, shape, describe(spec, shape), start, end)   # what a (resumed) run computed

The service answers POST /v1/plan with it; the worker uses flops_between to record its measured throughput.
"""

from __future__ import annotations

from pydantic import BaseModel

from trainer.plan.advice import Advice, advise
from trainer.plan.costs import (
    CheckpointEstimate,
    ComputeCost,
    Device,
    MemoryEstimate,
    ParameterCounts,
    checkpoint_estimate,
    compute_cost,
    flops_between,
    memory_estimate,
    parameter_counts,
)
from trainer.plan.layers import Net, describe
from trainer.plan.shapes import BUILTIN_SHAPES, DataShape, data_shape
from trainer.plan.width import WidthPosition, width_position
from trainer.spec import JobSpec


class JobPlan(BaseModel):
    width: WidthPosition | None
    parameters: ParameterCounts | None
    compute: ComputeCost | None
    memory: MemoryEstimate | None
    checkpoint: CheckpointEstimate | None
    advice: list[Advice]


def plan_job(spec: JobSpec, shape: DataShape, *, device: Device) -> JobPlan:
    """Everything countable about the job; the counts are None when the model cannot take this data (the advice
    then says why, as an error)."""
    try:
        net: Net | None = describe(spec, shape)
    except ValueError:  # a ResNet on tabular data: advise() reports it with the field at fault
        net = None
    advice = advise(spec, shape, net, device=device)
    if net is None or any(a.level == "error" for a in advice):
        return JobPlan(width=None, parameters=None, compute=None, memory=None, checkpoint=None, advice=advice)
    return JobPlan(width=width_position(spec, shape, net), parameters=parameter_counts(spec, net),
                   compute=compute_cost(spec, shape, net), memory=memory_estimate(spec, shape, net, device),
                   checkpoint=checkpoint_estimate(spec, shape, net), advice=advice)


__all__ = ["BUILTIN_SHAPES", "Advice", "CheckpointEstimate", "ComputeCost", "DataShape", "Device", "JobPlan",
           "MemoryEstimate", "ParameterCounts", "WidthPosition", "compute_cost", "data_shape", "describe",
           "flops_between", "plan_job"]
