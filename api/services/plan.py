"""Plan a job before queueing it: the trainer's counts, plus the queue it would join and how long it would run.

The spec passes the submit path's own validation (the JobSpec body, then resolve_data_source), so a plan answers
422 exactly where a submit would. Nothing is written.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from api.schemas import DataShapeOut, PlanOut, QueueState, RunEstimate
from api.services import reuse
from api.services.jobs import resolve_data_source
from core.artifacts.store import ArtifactStore
from core.db.models import ApiKey, ThroughputSample
from core.queue import queue_for
from core.repositories import datasets as datasets_repo
from core.repositories import jobs as jobs_repo
from core.repositories import throughput as throughput_repo
from core.settings import Settings
from trainer.plan import Advice, ComputeCost, DataShape, data_shape, plan_job
from trainer.spec import CifarData, DatasetRef, JobSpec, MnistData

ALIKE = 4.0  # samples whose step is within this factor of the planned step's FLOPs run at a comparable rate


def estimate_run(samples: Sequence[ThroughputSample], compute: ComputeCost | None, queue: str,
                 arch: str) -> RunEstimate:
    """setup + FLOPs / rate, with the medians of the recent samples most alike this job."""
    usable = [s for s in samples if s.seconds > 0 and s.flops > 0]
    if compute is None:
        return RunEstimate(seconds=None, setup_seconds=None, flops_per_second=None, samples=0, devices=[],
                           basis="no estimate: the job would fail (see warnings)")
    if not usable:
        return RunEstimate(seconds=None, setup_seconds=None, flops_per_second=None, samples=0, devices=[],
                           basis=f"no estimate yet: no worker of queue {queue!r} has finished a {arch!r} job")
    alike = [s for s in usable if 1 / ALIKE <= s.flops_per_step / max(compute.flops_per_step, 1.0) <= ALIKE]
    chosen = alike or usable
    rate = statistics.median(s.flops / s.seconds for s in chosen)
    setup = statistics.median(s.setup_seconds for s in chosen)
    which = (f"with a step within {ALIKE:g}x of this one's FLOPs" if alike
             else "none with a step of similar size, so a rough figure")
    return RunEstimate(seconds=setup + compute.flops_per_run / rate, setup_seconds=setup, flops_per_second=rate,
                       samples=len(chosen), devices=sorted({s.device for s in chosen}),
                       basis=f"the {len(chosen)} most recent {arch} runs on queue {queue!r} ({which}): the median "
                             "setup time plus this run's FLOPs at their median FLOP rate")


def _uploaded_shape(session: Session, owner: ApiKey, spec: JobSpec) -> tuple[DataShape | None, list[Advice]]:
    if not isinstance(spec.data, DatasetRef) or spec.data.id is None:
        return None, []
    row = datasets_repo.get_owned(session, owner.id, spec.data.id)
    if row is None:
        return None, []
    advice = []
    outputs = row.output_dim or row.num_classes
    if outputs is None:
        outputs = 1
        advice.append(Advice(level="info", code="outputs_assumed", field="data.id",
                             message="this upload predates recording its target columns; counted with 1 output"))
    shape = DataShape(row.n_train, row.n_test, tuple(row.input_shape["train"][1:]), outputs,
                      "classification" if row.task == "classification" else "regression")
    return shape, advice


@dataclass
class _Shared:
    """What every spec planned in one request shares: read once per queue and architecture."""

    session: Session
    depth: dict[str, tuple[int, int]] = field(default_factory=dict)
    samples: dict[tuple[str, str], Sequence[ThroughputSample]] = field(default_factory=dict)

    def queue_depth(self, queue: str) -> tuple[int, int]:
        if queue not in self.depth:
            self.depth[queue] = jobs_repo.queue_depth(self.session, queue)
        return self.depth[queue]

    def recent(self, queue: str, arch: str) -> Sequence[ThroughputSample]:
        if (queue, arch) not in self.samples:
            self.samples[(queue, arch)] = throughput_repo.recent(self.session, queue, arch)
        return self.samples[(queue, arch)]


def plan_specs(session: Session, owner: ApiKey, specs: Sequence[JobSpec], settings: Settings,
               artifacts: ArtifactStore) -> list[PlanOut]:
    """One plan per spec (a sweep is its list of configs' specs); the queue state, the caller's queued count and
    the throughput samples are read once. The first spec the submit path would refuse raises its 422."""
    resolved = [resolve_data_source(session, owner, spec) for spec in specs]  # the submit path's 422s
    shared = _Shared(session)
    hashes = [reuse.spec_hash_of(session, owner, spec, settings) for spec in resolved]
    reusable = reuse.reusable_jobs(session, owner, hashes, artifacts)
    yours = jobs_repo.count_queued(session, owner.id)
    return [_plan_one(session, owner, spec, settings, shared, digest, job.id if job else None, yours)
            for spec, digest, job in zip(resolved, hashes, reusable, strict=True)]


def plan(session: Session, owner: ApiKey, spec: JobSpec, settings: Settings, artifacts: ArtifactStore) -> PlanOut:
    return plan_specs(session, owner, [spec], settings, artifacts)[0]


def _plan_one(session: Session, owner: ApiKey, spec: JobSpec, settings: Settings, shared: _Shared,
              hashed: str | None, reusable_id: str | None, yours: int) -> PlanOut:
    uploaded, advice = _uploaded_shape(session, owner, spec)
    shape = data_shape(spec.data, uploaded)
    queue = queue_for(spec)
    counted = plan_job(spec, shape, device="cuda" if queue == "gpu" else "cpu") if shape is not None else None
    if hashed is None and isinstance(spec.data, MnistData | CifarData):
        advice.append(Advice(level="warning", code="data_files_unreadable", field="data.source",
                             message=f"the {spec.data.source} files cannot be read under NARROWNET_DATA_DIR "
                                     f"({settings.data_dir}) here: the job fails unless its worker has them, and "
                                     "without their content hash it gets no spec_hash and is never reused"))
    queued, running = shared.queue_depth(queue)
    cap = settings.max_queued_jobs_per_user
    if yours >= cap:
        advice.append(Advice(level="warning", code="queued_jobs_cap", field="body",
                             message=f"you have {yours} queued jobs, the most allowed: a submit now is refused "
                                     "(429) until some start or are cancelled"))
    compute = counted.compute if counted is not None else None
    return PlanOut(
        spec=spec.model_dump(mode="json"), spec_hash=hashed, reusable_job_id=reusable_id,
        data=None if shape is None else DataShapeOut(n_train=shape.n_train, n_test=shape.n_test,
                                                     sample_shape=list(shape.sample_shape), outputs=shape.outputs,
                                                     task=shape.task),
        width=counted.width if counted else None, parameters=counted.parameters if counted else None,
        compute=compute, memory=counted.memory if counted else None,
        checkpoint=counted.checkpoint if counted else None,
        queue=QueueState(name=queue, queued=queued, running=running, yours_queued=yours, yours_cap=cap),
        estimate=estimate_run(shared.recent(queue, spec.model.arch), compute, queue, spec.model.arch),
        warnings=[*(counted.advice if counted else []), *advice],
    )
