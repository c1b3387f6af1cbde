"""Sweeps: submission (expanded and validated, idempotent, capped, one job per config, packs sent after commit),
reading, listing, cancelling, results, the Figure-4 summary and its heatmap."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from api.errors import Conflict, FieldError, InvalidInput, NotFound
from api.services import quota, reuse, sweep_heatmap, sweep_tables
from api.services.jobs import data_source_errors, resolve_data_source
from api.services.sweep_tables import SummaryRequest
from api.sweep_schemas import BestConfig, Objective, PackOut, SweepCreated, SweepItem, SweepOut
from core.artifacts.store import ArtifactStore
from core.db.hooks import after_commit
from core.db.models import ApiKey, Job, JobStatus, Sweep, new_id, utcnow
from core.ids import is_plain_id
from core.queue import queue_for
from core.repositories import datasets as datasets_repo
from core.repositories import jobs as jobs_repo
from core.repositories import sweeps as repo
from core.repositories.jobs import SweepConfigRow, SweepTally
from core.settings import Settings
from trainer.grid import METRICS, GridConfig, GridError, SweepFile, expand
from trainer.packing import data_size, plan_packs
from trainer.spec import DatasetRef, JobSpec

EnqueuePack = Callable[[Sequence[str], str], None]


@dataclass(frozen=True)
class Pack:
    id: str
    job_ids: list[str]
    queue: str
    vectorized: bool


@dataclass(frozen=True)
class SweepSubmission:
    sweep: Sweep
    created: bool  # False: an Idempotency-Key replay
    packs: list[Pack]


def request_hash(body: SweepFile) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# -------------------------------------------------------------------------------------------------- submit
def _expand(body: SweepFile, settings: Settings) -> list[GridConfig]:
    try:
        return expand(body, max_configs=settings.max_sweep_configs)
    except GridError as exc:
        raise InvalidInput(exc.fields) from None


def _data_errors(session: Session, owner: ApiKey, body: SweepFile, configs: list[GridConfig]) -> list[FieldError]:
    """Where each distinct data spec comes from: named in the grid when a data axis set it, else in the base."""
    errors: dict[FieldError, None] = {}
    seen: set[str] = set()
    for config in configs:
        key = json.dumps(config.spec.data.model_dump(mode="json"), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        for field, reason in data_source_errors(session, owner, config.spec):
            axis = next((a for a in config.params if a.startswith("data.") and field.startswith(a)), None)
            if axis is None:
                errors[(f"base.{field}", reason)] = None
            else:
                index = [sweep_tables.canonical(v) for v in body.grid[axis]].index(
                    sweep_tables.canonical(config.params[axis]))
                errors[(f"grid.{axis}[{index}]", reason)] = None
    return list(errors)


def sizes_of(session: Session, owner: ApiKey) -> Callable[[JobSpec], tuple[int, int]]:
    """(training rows, input size) of a config's data for pack planning; uploads from their dataset rows."""
    def size_of(spec: JobSpec) -> tuple[int, int]:
        if isinstance(spec.data, DatasetRef) and spec.data.id is not None:
            dataset = datasets_repo.get_owned(session, owner.id, spec.data.id)
            if dataset is not None:
                shape = dataset.input_shape.get("train") or [dataset.n_train, 1]
                return data_size(spec, (dataset.n_train, math.prod(shape[1:]) or 1))
        return data_size(spec)
    return size_of


def prepare(session: Session, owner: ApiKey, body: SweepFile, settings: Settings) -> list[GridConfig]:
    """The sweep's configs as they would run, with the submit path's 422s: a bad grid, too many configs, a data
    source that is not there (named by its grid value or base field). Uploads named by name are pinned to the
    dataset they name now, as for a job. Shared by submit and plan, so both refuse alike."""
    configs = _expand(body, settings)
    if errors := _data_errors(session, owner, body, configs):
        raise InvalidInput(errors)
    return [replace(c, spec=resolve_data_source(session, owner, c.spec)) for c in configs]


def pack_members(session: Session, owner: ApiKey, specs: Sequence[JobSpec]) -> list[list[int]]:
    """How these configs would be sent: indices into `specs`, one list per pack."""
    return plan_packs(specs, sizes_of(session, owner))


def submit_sweep(session: Session, owner: ApiKey, body: SweepFile, *, idempotency_key: str | None,
                 settings: Settings, enqueue_pack: EnqueuePack,
                 reuse_from: ArtifactStore | None = None) -> SweepSubmission:
    """Record the sweep and one job per config; send its packs once the transaction commits. With reuse_from (the
    artifact store holding results), a config whose spec_hash matches one of the caller's succeeded jobs (its
    final checkpoint still there) is recorded as succeeded, pointing at that job, and only the rest are queued."""
    digest = request_hash(body)
    if idempotency_key is not None and (existing := repo.get_by_idempotency_key(session, owner.id,
                                                                                idempotency_key)) is not None:
        return _replay(session, existing, digest, idempotency_key)
    configs = prepare(session, owner, body, settings)
    hashes = [reuse.spec_hash_of(session, owner, c.spec, settings) for c in configs]
    earlier: list[Job | None] = [None] * len(configs)
    if reuse_from is not None:
        earlier = reuse.reusable_jobs(session, owner, hashes, reuse_from)
    planned = _Planned(configs, hashes, earlier)
    return quota.insert_within_queued_config_cap(
        session, owner, settings, lambda: _insert(session, owner, body, planned, digest, idempotency_key,
                                                  enqueue_pack), slots=sum(e is None for e in earlier))


@dataclass(frozen=True)
class _Planned:
    configs: list[GridConfig]
    hashes: list[str | None]
    earlier: list[Job | None]  # per config: the succeeded job it reuses, or None to train it


def _insert(session: Session, owner: ApiKey, body: SweepFile, planned: _Planned, digest: str,
            idempotency_key: str | None, enqueue_pack: EnqueuePack) -> SweepSubmission:
    configs = planned.configs
    now = utcnow()
    sweep_id = new_id()
    values: dict[str, Any] = {
        "id": sweep_id, "owner_id": owner.id, "name": body.sweep_name, "spec": body.model_dump(mode="json"),
        "axes": body.axes, "n_configs": len(configs), "objective_metric": body.objective.metric,
        "objective_mode": body.objective.mode, "cancel_requested": False, "idempotency_key": idempotency_key,
        "request_hash": digest, "created_at": now, "updated_at": now,
    }
    if idempotency_key is None:
        sweep = repo.add(session, values)
    elif repo.insert_unless_key_taken(session, values):
        sweep = session.get_one(Sweep, sweep_id)
    else:  # a concurrent request with the same key committed first
        winner = repo.get_by_idempotency_key(session, owner.id, idempotency_key)
        assert winner is not None
        return _replay(session, winner, digest, idempotency_key)

    job_ids = [new_id() for _ in configs]
    train = [i for i, done in enumerate(planned.earlier) if done is None]
    packs = [Pack(f"{sweep_id}-{n}", [job_ids[train[i]] for i in members], queue_for(configs[train[members[0]]].spec),
                  vectorized=configs[train[members[0]]].spec.model.arch == "shallow")
             for n, members in enumerate(pack_members(session, owner, [configs[i].spec for i in train]))]
    pack_of = {job_id: pack for pack in packs for job_id in pack.job_ids}
    rows = []
    for job_id, c, hashed, done in zip(job_ids, configs, planned.hashes, planned.earlier, strict=True):
        row: dict[str, Any] = {
            "id": job_id, "owner_id": owner.id, "name": c.spec.name, "regime": c.spec.regime,
            "spec": c.spec.model_dump(mode="json"), "queue": queue_for(c.spec), "status": JobStatus.QUEUED,
            "attempt": 0, "cancel_requested": False, "step": 0, "total_steps": c.spec.optim.iterations,
            "sweep_id": sweep_id, "sweep_index": c.index, "params": c.params, "pack_id": None, "reused_from": None,
            "spec_hash": hashed, "created_at": now, "updated_at": now,
        }
        if done is None:
            row.update(queue=pack_of[job_id].queue, pack_id=pack_of[job_id].id)
        else:  # its result is the earlier job's: finished now, with that job's outcome (checkpoints follow it)
            row.update(status=JobStatus.SUCCEEDED, reused_from=done.id, step=done.step, total_steps=done.total_steps,
                       latest_metrics=done.latest_metrics, final_metrics=done.final_metrics, started_at=now,
                       finished_at=now)
        rows.append(row)
    jobs_repo.add_many(session, rows)

    for pack in packs:
        after_commit(session, _sender(enqueue_pack, pack))
    return SweepSubmission(sweep, created=True, packs=packs)


def _sender(enqueue_pack: EnqueuePack, pack: Pack) -> Callable[[], None]:
    return lambda: enqueue_pack(pack.job_ids, pack.queue)


def _replay(session: Session, existing: Sweep, digest: str, key: str) -> SweepSubmission:
    if existing.request_hash != digest:
        raise Conflict(f"Idempotency-Key {key!r} was already used for a different sweep (sweep {existing.id})",
                       code="idempotency_conflict")
    configs = jobs_repo.sweep_configs(session, existing.id)
    return SweepSubmission(existing, created=False, packs=_packs_of(session, existing, configs))


def _packs_of(session: Session, sweep: Sweep, configs: list[SweepConfigRow]) -> list[Pack]:
    """The packs a sweep was sent as, from its rows (an Idempotency-Key replay answers with them again)."""
    base_arch = sweep.spec.get("base", {}).get("model", {}).get("arch")
    packs: dict[str, Pack] = {}
    trained = [c for c in configs if c.reused_from is None]
    for config, (job_id, pack_id) in zip(trained, jobs_repo.pack_ids(session, sweep.id), strict=True):
        arch = config.params.get("model.arch", base_arch)
        pack = packs.setdefault(pack_id or job_id, Pack(pack_id or job_id, [], "", vectorized=arch == "shallow"))
        pack.job_ids.append(job_id)
    return list(packs.values())


# ---------------------------------------------------------------------------------------------------- read
def get_sweep(session: Session, owner: ApiKey, sweep_id: str) -> Sweep:
    """The caller's sweep; another user's sweep is as absent as one that never existed."""
    sweep = repo.get_owned(session, owner.id, sweep_id) if is_plain_id(sweep_id) else None
    if sweep is None:
        raise NotFound(f"no sweep {sweep_id[:64]!r}")
    return sweep


def _item(sweep: Sweep, tally: SweepTally, best_value: float | None) -> dict[str, Any]:
    status = sweep_tables.status_of(tally, sweep.n_configs, sweep.cancel_requested)
    return {"id": sweep.id, "name": sweep.name, "status": status, "n_configs": sweep.n_configs,
            "counts": {s.value: tally.counts.get(s, 0) for s in JobStatus},
            "progress": sweep_tables.progress_of(tally, sweep.n_configs), "axes": sweep.axes,
            "objective": Objective.model_validate({"metric": sweep.objective_metric, "mode": sweep.objective_mode}),
            "best_value": best_value, "cancel_requested": sweep.cancel_requested, "created_at": sweep.created_at,
            "jobs_url": f"/v1/jobs?sweep_id={sweep.id}"}


def sweep_out(session: Session, sweep: Sweep, now: datetime) -> SweepOut:
    tally = jobs_repo.tally_sweeps(session, [sweep.id])[sweep.id]
    configs = jobs_repo.sweep_configs(session, sweep.id)
    best = sweep_tables.best_config(configs, sweep.objective_metric, "max" if sweep.objective_mode == "max" else "min")
    item = _item(sweep, tally, None if best is None else best["value"])
    started = sweep_tables.first_started(configs)
    return SweepOut(**item, eta_seconds=sweep_tables.eta_seconds(item["progress"], started, now, item["status"]),
                    best=None if best is None else BestConfig(**best), started_at=started,
                    finished_at=sweep_tables.last_finished(configs) if item["status"] in (
                        "succeeded", "failed", "cancelled") else None,
                    grid=sweep.spec["grid"], base=sweep.spec["base"])


def created_out(session: Session, submission: SweepSubmission, now: datetime) -> SweepCreated:
    out = sweep_out(session, submission.sweep, now)
    configs = jobs_repo.sweep_configs(session, submission.sweep.id)
    notes = []
    if reused := sum(c.reused_from is not None for c in configs):
        notes.append(f"{reused} config(s) reuse your earlier succeeded job of the same spec_hash (reused_from): "
                     "they are succeeded already and were not queued")
    alone = sum(len(p.job_ids) for p in submission.packs if not p.vectorized)
    if alone:
        notes.append(f"{alone} config(s) are deep nets (mlp, resnet18): they train one job per pack, not vectorized")
    queued = sum(len(p.job_ids) for p in submission.packs)
    notes.append(f"{queued} config(s) to train in {len(submission.packs)} pack(s); each pack trains as one program")
    return SweepCreated(**out.model_dump(), job_ids=[c.id for c in configs],
                        packs=[PackOut(id=p.id, job_ids=p.job_ids, vectorized=p.vectorized)
                               for p in submission.packs], notes=notes)


def list_sweeps(session: Session, owner: ApiKey, *, limit: int, offset: int) -> tuple[list[SweepItem], int]:
    rows, total = repo.list_owned(session, owner.id, limit=limit, offset=offset)
    tallies = jobs_repo.tally_sweeps(session, [s.id for s in rows])
    best: dict[str, float] = {}
    for metric in {s.objective_metric for s in rows}:  # one query per objective metric (nearly always one)
        ranges = jobs_repo.sweep_metric_ranges(session, [s.id for s in rows if s.objective_metric == metric], metric)
        for s in rows:
            if s.id in ranges and s.objective_metric == metric:
                low, high = ranges[s.id]
                best[s.id] = high if s.objective_mode == "max" else low
    return [SweepItem(**_item(s, tallies[s.id], best.get(s.id))) for s in rows], total


def cancel_sweep(session: Session, owner: ApiKey, sweep_id: str) -> Sweep:
    """Idempotent: every unfinished config is cancelled (queued at once, running at its worker's next check);
    finished ones stay as they are."""
    sweep = get_sweep(session, owner, sweep_id)
    now = utcnow()
    repo.request_cancel(session, sweep.id, now)
    jobs_repo.cancel_sweep_configs(session, sweep.id, now)
    session.refresh(sweep)
    return sweep


def results(session: Session, owner: ApiKey, sweep_id: str) -> tuple[Sweep, list[SweepConfigRow]]:
    sweep = get_sweep(session, owner, sweep_id)
    return sweep, jobs_repo.sweep_configs(session, sweep.id)


# -------------------------------------------------------------------------------------------------- summary
def summary_request(sweep: Sweep, *, rows: str | None, cols: str | None, split: str | None, metric: str | None,
                    reduce: str | None) -> SummaryRequest:
    """The table's axes and metric, defaulted from the sweep (rows, cols: its first two axes; metric and reduce:
    its objective), each checked against it: 422 naming the query parameter."""
    axes = list(sweep.axes)
    rows = rows or axes[0]
    if cols is None and split is None and len(axes) > 1:
        cols = next(a for a in axes if a != rows)
    errors: list[FieldError] = []
    for name, axis in (("rows", rows), ("cols", cols), ("split", split)):
        if axis is not None and axis not in axes:
            errors.append((name, f"{axis!r} is not an axis of this sweep; its axes: {', '.join(axes)}"))
    chosen = [a for a in (rows, cols, split) if a is not None]
    if len(set(chosen)) < len(chosen):
        errors.append(("cols" if cols in (rows,) else "split", "rows, cols and split must be different axes"))
    metric = metric or sweep.objective_metric
    if metric not in METRICS:
        errors.append(("metric", f"{metric!r} is not a metric; choose from {', '.join(METRICS)}"))
    if reduce is None:
        reduce = sweep.objective_mode if metric == sweep.objective_metric else "min"
    if errors:
        raise InvalidInput(errors)
    return SummaryRequest(rows=rows, cols=cols, split=split, metric=metric,
                          reduce="max" if reduce == "max" else "min")


def summary(session: Session, owner: ApiKey, sweep_id: str, **params: str | None) -> dict[str, Any]:
    sweep, configs = results(session, owner, sweep_id)
    ask = summary_request(sweep, **params)
    return {"sweep_id": sweep.id, **sweep_tables.summarize(sweep.spec["grid"], configs, ask)}


def heatmap(session: Session, owner: ApiKey, sweep_id: str, fmt: sweep_heatmap.ImageFormat,
            **params: str | None) -> bytes:
    table = summary(session, owner, sweep_id, **params)
    sweep = get_sweep(session, owner, sweep_id)
    title = (f"{sweep.name}: {table['reduce']} {table['metric']} over the other axes "
             f"({sweep.n_configs} configs)")
    return sweep_heatmap.render(table, fmt, title)
