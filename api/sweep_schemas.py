"""Response models of /v1/sweeps (the request body of POST /v1/sweeps is trainer.grid.SweepFile itself)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas import QueueState, RunEstimate, UtcDatetime
from trainer.plan import Advice, CheckpointEstimate, ComputeCost, MemoryEstimate, ParameterCounts, WidthPosition

SweepStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Objective(BaseModel):
    metric: str
    mode: Literal["min", "max"]


class BestConfig(BaseModel):
    job_id: str
    index: int
    params: dict[str, Any]
    metric: str
    value: float
    status: str
    final: bool = Field(description="false: a running config's latest value")


class SweepItem(BaseModel):
    id: str
    name: str
    status: SweepStatus
    n_configs: int
    counts: dict[str, int] = Field(description="configs per job status")
    progress: float = Field(ge=0, le=1, description="finished configs whole, unfinished ones by their steps")
    axes: list[str]
    objective: Objective
    best_value: float | None = Field(description="the objective's best value so far: succeeded configs' final "
                                                 "values, running ones' latest")
    cancel_requested: bool
    created_at: UtcDatetime
    jobs_url: str = Field(description="its configs as jobs: GET /v1/jobs?sweep_id=")


class SweepOut(SweepItem):
    eta_seconds: float | None = Field(description="while running: remaining time at the rate so far")
    best: BestConfig | None = Field(description="the best config so far by the objective")
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    grid: dict[str, list[Any]]
    base: dict[str, Any]


class PackOut(BaseModel):
    id: str
    job_ids: list[str]
    vectorized: bool = Field(description="false: trained one job at a time (deep nets: mlp, resnet18)")


class SweepCreated(SweepOut):
    job_ids: list[str] = Field(description="one job per config, in grid order (the last axis varies fastest)")
    packs: list[PackOut] = Field(description="configs trained together as one vectorized program")
    notes: list[str]


class SweepPage(BaseModel):
    items: list[SweepItem]
    total: int
    limit: int
    offset: int


class ConfigResult(BaseModel):
    index: int
    job_id: str
    params: dict[str, Any] = Field(description="keyed by the grid's dotted paths")
    status: str
    final_metrics: dict[str, Any] | None = Field(description="non-finite values are null")
    error: str | None
    reused_from: str | None = Field(default=None, description="not trained: your earlier succeeded job of the "
                                                              "same spec_hash whose result this config carries")


class SweepResults(BaseModel):
    sweep_id: str
    axes: list[str]
    objective: Objective
    items: list[ConfigResult]


class SummaryCell(BaseModel):
    row: Any
    col: Any
    value: float | None = Field(description="best value over the other axes; null when no config succeeded")
    job_id: str | None
    params: dict[str, Any] | None = Field(description="the grid values of the config that achieved it")
    configs: int
    succeeded: int


class SummaryPanel(BaseModel):
    split: Any
    cells: list[list[SummaryCell]] = Field(description="cells[row][col]")


class SummaryAxis(BaseModel):
    axis: str
    values: list[Any]


class SweepSummary(BaseModel):
    sweep_id: str
    metric: str
    metrics: list[str] = Field(description="the metrics the sweep's succeeded configs recorded (choices for metric)")
    reduce: Literal["min", "max"]
    rows: SummaryAxis
    cols: SummaryAxis | None
    split: SummaryAxis | None
    panels: list[SummaryPanel]


class ConfigPlan(BaseModel):
    """One config of a planned sweep: its counts as POST /v1/plan gives them for a job."""

    index: int
    params: dict[str, Any] = Field(description="keyed by the grid's dotted paths")
    spec_hash: str | None
    reusable_job_id: str | None = Field(description="your succeeded job with the same spec_hash")
    reused: bool = Field(description="true: with 'Reuse: succeeded' this config would point at reusable_job_id "
                                     "and not train")
    pack: int | None = Field(description="index into packs; null when reused")
    width: WidthPosition | None
    parameters: ParameterCounts | None
    compute: ComputeCost | None
    memory: MemoryEstimate | None
    checkpoint: CheckpointEstimate | None
    estimate: RunEstimate
    warnings: list[Advice]


class PackPlan(BaseModel):
    index: int
    configs: list[int] = Field(description="config indices trained together as one program")
    size: int
    queue: str
    vectorized: bool = Field(description="false: a deep net, trained one config at a time")
    memory_bytes: int | None = Field(description="an upper bound of the pack's peak device memory: every member's "
                                                 "state and activations, the data set once; null when unknown")
    apart_because: str | None = Field(description="why these configs could not join an earlier pack")


class SweepPlanTotals(BaseModel):
    configs: int
    to_train: int
    reused: int
    parameters: int = Field(description="trainable parameters summed over the configs to train")
    flops: float = Field(description="FLOPs per run summed over the configs to train")
    largest_pack_memory_bytes: int | None
    estimated_seconds: float | None = Field(description="the configs' run-time estimates summed: one worker "
                                                        "training them one after another (a vectorized pack is "
                                                        "usually faster); null while any has no estimate")
    configs_without_estimate: int


class SweepPlanOut(BaseModel):
    """What a sweep would be, counted before anything is queued (POST /v1/plan, POST /v1/sweeps?dry_run=true)."""

    name: str
    axes: list[str]
    totals: SweepPlanTotals
    packs: list[PackPlan]
    queues: list[QueueState]
    queued_configs: int = Field(description="your sweep configs queued now")
    queued_configs_cap: int = Field(description="max_queued_sweep_configs_per_user: a submit past it gets 429")
    configs: list[ConfigPlan] = Field(description="in grid order (the last axis varies fastest)")
    warnings: list[Advice] = Field(description="the configs' warnings (each once, with how many configs have it) "
                                               "and the sweep's own: configs that cannot be packed together, caps")
