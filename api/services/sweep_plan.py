"""Plan a sweep before queueing it: each config's counts (as a job's plan), the totals, the packs it would be sent
as and why configs could not share one, and which configs a 'Reuse: succeeded' submit would not train.

The body passes the sweep submit's own checks (sweeps.prepare: the grid, max_sweep_configs, the data sources), so a
plan answers 422 exactly where a submit would. Nothing is written and nothing is queued.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy.orm import Session

from api.schemas import PlanOut, QueueState
from api.services import plan, sweeps
from api.sweep_schemas import ConfigPlan, PackPlan, SweepPlanOut, SweepPlanTotals
from core.artifacts.store import ArtifactStore
from core.db.models import ApiKey
from core.repositories import jobs as jobs_repo
from core.settings import Settings
from trainer.grid import SweepFile
from trainer.packing import why_apart
from trainer.plan import Advice

# A job's plan warns about the per-job queued cap; a sweep's configs count against the sweep-config cap instead.
_JOB_ONLY_ADVICE = {"queued_jobs_cap"}


def plan_sweep(session: Session, owner: ApiKey, body: SweepFile, settings: Settings, artifacts: ArtifactStore, *,
               reuse: bool) -> SweepPlanOut:
    """The sweep as a submit would record it; with reuse, configs with a reusable job are left out of the packs."""
    configs = sweeps.prepare(session, owner, body, settings)
    plans = plan.plan_specs(session, owner, [c.spec for c in configs], settings, artifacts)
    reused = [reuse and p.reusable_job_id is not None for p in plans]
    train = [i for i, r in enumerate(reused) if not r]
    specs = [configs[i].spec for i in train]
    members = sweeps.pack_members(session, owner, specs)
    reasons = why_apart(specs, members, sweeps.sizes_of(session, owner))
    packs = [PackPlan(index=n, configs=[configs[train[i]].index for i in group], size=len(group),
                      queue=plans[train[group[0]]].queue.name,
                      vectorized=configs[train[group[0]]].spec.model.arch == "shallow",
                      memory_bytes=_pack_memory([plans[train[i]] for i in group]), apart_because=why)
             for n, (group, why) in enumerate(zip(members, reasons, strict=True))]
    pack_of = {config: pack.index for pack in packs for config in pack.configs}
    items = [ConfigPlan(index=c.index, params=c.params, spec_hash=p.spec_hash, reusable_job_id=p.reusable_job_id,
                        reused=r, pack=pack_of.get(c.index), width=p.width, parameters=p.parameters,
                        compute=p.compute, memory=p.memory, checkpoint=p.checkpoint, estimate=p.estimate,
                        warnings=[w for w in p.warnings if w.code not in _JOB_ONLY_ADVICE])
             for c, p, r in zip(configs, plans, reused, strict=True)]
    queued = jobs_repo.count_queued_sweep_configs(session, owner.id)
    cap = settings.max_queued_sweep_configs_per_user
    return SweepPlanOut(
        name=body.sweep_name, axes=body.axes, totals=_totals([plans[i] for i in train], len(configs), packs),
        packs=packs, queues=_queues(plans), queued_configs=queued, queued_configs_cap=cap, configs=items,
        warnings=[*_shared_warnings(items), *_sweep_warnings(packs, len(train), queued, cap)])


def _pack_memory(members: Sequence[PlanOut]) -> int | None:
    if any(p.memory is None for p in members) or not members:
        return None
    state = sum(p.memory.total - p.memory.data_on_device for p in members if p.memory is not None)
    return state + max(p.memory.data_on_device for p in members if p.memory is not None)


def _totals(trained: Sequence[PlanOut], n_configs: int, packs: Sequence[PackPlan]) -> SweepPlanTotals:
    seconds = [p.estimate.seconds for p in trained]
    known = [s for s in seconds if s is not None]
    memories = [p.memory_bytes for p in packs]
    return SweepPlanTotals(
        configs=n_configs, to_train=len(trained), reused=n_configs - len(trained),
        parameters=sum(p.parameters.total for p in trained if p.parameters is not None),
        flops=sum(p.compute.flops_per_run for p in trained if p.compute is not None),
        largest_pack_memory_bytes=None if not memories or None in memories else max(m for m in memories if m),
        estimated_seconds=sum(known) if len(known) == len(seconds) else None,
        configs_without_estimate=len(seconds) - len(known))


def _queues(plans: Sequence[PlanOut]) -> list[QueueState]:
    by_name: dict[str, QueueState] = {}
    for p in plans:
        by_name.setdefault(p.queue.name, p.queue)
    return list(by_name.values())


def _shared_warnings(items: Sequence[ConfigPlan]) -> list[Advice]:
    """Each config warning once, saying how many configs have it (a grid repeats the same advice per config)."""
    counts = Counter((w.level, w.code, w.field, w.message) for item in items for w in item.warnings)
    return [Advice(level=level, code=code, field=field, message=f"{message} ({n} of {len(items)} configs)")
            for (level, code, field, message), n in counts.items()]


def _sweep_warnings(packs: Sequence[PackPlan], to_train: int, queued: int, cap: int) -> list[Advice]:
    advice = [Advice(level="info", code="configs_not_packed", field="grid",
                     message=f"pack {p.index} ({p.size} config(s)) trains apart: {p.apart_because}")
              for p in packs if p.apart_because is not None]
    if queued + to_train > cap:
        advice.append(Advice(level="warning", code="queued_configs_cap", field="body",
                             message=f"these {to_train} configs and your {queued} queued ones exceed the {cap} "
                                     "queued sweep configs allowed: a submit now is refused (429)"))
    return advice
