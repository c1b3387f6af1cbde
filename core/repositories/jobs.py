"""Every query about jobs and what hangs off them (metric points, checkpoints, leases), for API and worker alike.

Reads on behalf of a user are scoped to an owner. Worker writes are fenced: `UPDATE jobs ... WHERE id = :id AND
attempt = :attempt AND status = 'running'`; a fenced write that matches no row means a newer attempt (or a final
state set elsewhere, or the reconciler) owns the job. The lease predicate and the insert-or-ignore helper exist
once, here, and claim, fencing and the reconciler's queries all use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    and_,
    any_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from core.db.models import ApiKey, Checkpoint, Job, JobStatus, MetricPoint, utcnow
from core.db.session import begin_write, lock_timeout_ms, lock_wait_bound
from core.db.statements import core_table, insert_ignoring_conflicts, json_number, rowcount
from core.jsonvalues import finite_or_none

BATCH = 500  # jobs per kind per reconciler pass: bounds one transaction; a larger backlog takes more passes


@dataclass(frozen=True)
class JobFilters:
    status: JobStatus | None = None
    regime: str | None = None
    name: str | None = None
    id_prefix: str | None = None
    spec_hash: str | None = None
    sweep_id: str | None = None


@dataclass(frozen=True)
class Dispatch:
    """What sending a job again needs: its queue, and its pack (a sweep's configs that train together)."""

    id: str
    queue: str
    pack_id: str | None = None


@dataclass(frozen=True)
class SweepConfigRow:
    """One config of a sweep, as the sweep's status, results and summary read it."""

    id: str
    sweep_index: int
    params: dict[str, Any]
    status: JobStatus
    step: int
    total_steps: int | None
    latest_metrics: dict[str, Any] | None
    final_metrics: dict[str, Any] | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    reused_from: str | None = None  # not trained: the earlier succeeded job whose result it carries


@dataclass
class SweepTally:
    """A sweep's configs counted by status, and the steps done out of all by its unfinished (queued, running) ones."""

    counts: dict[JobStatus, int]
    active_steps: int
    active_total_steps: int


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker needs of a job it has claimed for one attempt."""

    id: str
    attempt: int
    owner_id: str
    spec: dict[str, Any]
    spec_hash: str | None
    # (step, key, sha256) of the checkpoints recorded when it was claimed (recorded_checkpoints): what it resumes from.
    checkpoints: tuple[tuple[int, str, str], ...] = ()


# ------------------------------------------------------------------------------------------------- helpers
def lease_over(now: datetime) -> ColumnElement[bool]:
    """The job's lease has run out (or it never had one): the worker that held it is presumed dead."""
    return or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)


def gave_up_error(max_attempts: int) -> str:
    return f"gave up after {max_attempts} attempts (worker lost each time)"


# -------------------------------------------------------------------------------------------- owner reads
def get_owned(session: Session, owner_id: str, job_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id, Job.owner_id == owner_id))


def get(session: Session, job_id: str) -> Job | None:
    """A job by id, whoever owns it: for readers that checked ownership already (the live event feed)."""
    return session.get(Job, job_id, populate_existing=True)


def last_metric_step(session: Session, job_id: str) -> int | None:
    return session.scalar(select(func.max(MetricPoint.step)).where(MetricPoint.job_id == job_id))


def list_owned_by_ids(session: Session, owner_id: str, job_ids: Sequence[str]) -> Sequence[Job]:
    return session.scalars(select(Job).where(Job.owner_id == owner_id, Job.id.in_(job_ids))).all()


def get_by_idempotency_key(session: Session, owner_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


# Every submission runs these two (the queued cap's lock and count): built once, run on the session's connection
# as Core statements, they skip the ORM's per-statement work and a fresh statement's cache key. The API's plain
# submissions run LOCK_OWNER on the driver (api/services/job_writes.py).
_QUEUED_JOBS = (select(func.count()).select_from(core_table(Job))
                .where(core_table(Job).c.owner_id == bindparam("owner_id"),
                       core_table(Job).c.status == JobStatus.QUEUED, core_table(Job).c.sweep_id.is_(None)))
LOCK_OWNER = (select(core_table(ApiKey).c.id).where(core_table(ApiKey).c.id == bindparam("owner_id"))
              .with_for_update(key_share=True))

# What a plain submission writes; the rest of a new job's columns start NULL.
SUBMITTED_COLUMNS = ("id", "owner_id", "name", "regime", "spec", "queue", "status", "idempotency_key", "request_hash",
                     "spec_hash", "total_steps", "attempt", "step", "cancel_requested", "created_at", "updated_at")


@lru_cache(maxsize=2)
def insert_within_cap(with_key: bool) -> Insert:
    """PostgreSQL: INSERT one job (SUBMITTED_COLUMNS as parameters) only while its owner has fewer than :cap queued
    jobs that are not sweep configs (:queued is the queued status's value), RETURNING the whole row; with_key, a
    job whose owner already used its idempotency_key inserts nothing either. Run it after LOCK_OWNER in the same
    transaction: the count then sees every insert of the owner that committed before, as count_queued_locked's."""
    jobs = core_table(Job)
    owner = bindparam("owner_id", type_=jobs.c.owner_id.type)
    queued = (select(func.count()).select_from(jobs)
              .where(jobs.c.owner_id == owner, jobs.c.status == bindparam("queued", type_=jobs.c.status.type),
                     jobs.c.sweep_id.is_(None))
              .scalar_subquery())
    row = select(*(owner if name == "owner_id" else bindparam(name, type_=jobs.c[name].type)
                   for name in SUBMITTED_COLUMNS)).where(queued < bindparam("cap"))
    statement = postgresql.insert(jobs).from_select(SUBMITTED_COLUMNS, row, include_defaults=False)
    if with_key:
        statement = statement.on_conflict_do_nothing(index_elements=["owner_id", "idempotency_key"])
    return statement.returning(*jobs.c)


def count_queued(session: Session, owner_id: str) -> int:
    """Queued jobs of the owner that are not sweep configs (those have their own cap: count_queued_sweep_configs)."""
    return session.connection().execute(_QUEUED_JOBS, {"owner_id": owner_id}).scalar_one()


def count_queued_sweep_configs(session: Session, owner_id: str) -> int:
    """Queued configs of all the owner's sweeps."""
    return session.scalar(
        select(func.count()).select_from(Job).where(Job.owner_id == owner_id, Job.status == JobStatus.QUEUED,
                                                    Job.sweep_id.is_not(None))
    ) or 0


def lock_owner_queue(session: Session, owner_id: str, *, wait_seconds: float) -> None:
    """Take the owner's queue lock, held until the transaction ends.

    Concurrent submissions of one owner take turns from here to their commit, so none of them counts before
    another's insert is visible: a per-user cap checked against a count made under it holds. PostgreSQL: the
    owner's api_keys row FOR NO KEY UPDATE (it excludes its like, not the key-share locks of inserts that
    reference the row), waited for at most `wait_seconds` (then lock_not_available, a 503 database_busy). SQLite:
    the database's write lock (BEGIN IMMEDIATE), whose wait the engine bounds.
    """
    begin_write(session)
    if session.get_bind().dialect.name == "postgresql":
        wanted = lock_timeout_ms(wait_seconds)
        if lock_wait_bound(session) != wanted:  # the API's connections are opened with it: a round trip saved
            session.execute(text(f"SET LOCAL lock_timeout = {wanted}"))
        session.connection().execute(LOCK_OWNER, {"owner_id": owner_id})


def count_queued_locked(session: Session, owner_id: str, *, wait_seconds: float) -> int:
    """The owner's queued jobs (not sweep configs), counted under the owner's queue lock."""
    lock_owner_queue(session, owner_id, wait_seconds=wait_seconds)
    return count_queued(session, owner_id)


def newest_succeeded_by_hash(session: Session, owner_id: str, spec_hashes: Sequence[str]) -> dict[str, Job]:
    """spec_hash -> the owner's most recently finished succeeded job with it (never a failed or cancelled one, nor a
    sweep config that itself reused one: the answer is always the job that trained)."""
    if not spec_hashes:
        return {}
    rank = func.row_number().over(partition_by=Job.spec_hash, order_by=(Job.finished_at.desc(), Job.id.desc()))
    ranked = (select(Job.id, rank.label("rank"))
              .where(Job.owner_id == owner_id, Job.spec_hash.in_(set(spec_hashes)), Job.status == JobStatus.SUCCEEDED,
                     Job.reused_from.is_(None))
              .subquery())
    rows = session.scalars(select(Job).join(ranked, Job.id == ranked.c.id).where(ranked.c.rank == 1))
    return {str(job.spec_hash): job for job in rows}


def queue_depth(session: Session, queue: str) -> tuple[int, int]:
    """(queued, running) jobs of every user on `queue`: what a job sent there now would wait behind."""
    rows = session.execute(
        select(Job.status, func.count()).where(Job.queue == queue,
                                               Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
        .group_by(Job.status)
    ).all()
    counts = {status: count for status, count in rows}
    return counts.get(JobStatus.QUEUED, 0), counts.get(JobStatus.RUNNING, 0)


def _given(filters: JobFilters) -> dict[str, Any]:
    """The filters that are set, by column, as plain values (an enum member as its value: a driver-level read
    binds them without SQLAlchemy's types); an id prefix as the LIKE pattern of `id_like`."""
    given = {f.name: getattr(filters, f.name) for f in fields(filters) if getattr(filters, f.name) is not None}
    if isinstance(given.get("status"), JobStatus):
        given["status"] = given["status"].value
    if "id_prefix" in given:
        prefix = given.pop("id_prefix")
        given["id_like"] = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
    return given


def _conditions(owner_id: Any, given: dict[str, Any]) -> list[ColumnElement[bool]]:
    """The WHERE of a filtered list of the owner's jobs; values may be bind parameters."""
    table = core_table(Job)
    return [table.c.owner_id == owner_id,
            *(table.c.id.like(value, escape="/") if name == "id_like" else table.c[name] == value
              for name, value in given.items())]


# Lists of jobs (list_owned) and the API's async reads (api/services/job_reads.py): Core rows of the jobs table.
# Statements are built once per set of filters and run with parameters: building and compiling a fresh one costs
# more than running it.
OWNED_JOB = select(*core_table(Job).c).where(core_table(Job).c.id == bindparam("job_id"),
                                             core_table(Job).c.owner_id == bindparam("owner_id"))
# PostgreSQL: the jobs of several status polls in one read (:ids a list); each poll keeps its owner's job only.
JOBS_WITH_IDS = select(*core_table(Job).c).where(
    core_table(Job).c.id == any_(bindparam("ids", type_=postgresql.ARRAY(core_table(Job).c.id.type))))


@lru_cache(maxsize=64)
def _count_statement(names: tuple[str, ...]) -> Select[Any]:
    return (select(func.count()).select_from(core_table(Job))
            .where(*_conditions(bindparam("owner_id"), {name: bindparam(name) for name in names})))


@lru_cache(maxsize=64)
def _page_statement(names: tuple[str, ...]) -> Select[Any]:
    # The total as an uncorrelated subquery, counted once: the page itself then stops after its LIMIT. A window
    # count (count(*) OVER ()) made the page read every matching row first: 74 ms against 3.6 ms for an owner of
    # 100,000 jobs (bench/bench_list_page.py).
    table = core_table(Job)
    return (select(*table.c, _count_statement(names).scalar_subquery().label("total"))
            .where(*_conditions(bindparam("owner_id"), {name: bindparam(name) for name in names}))
            .order_by(table.c.created_at.desc(), table.c.id.desc())
            .limit(bindparam("limit")).offset(bindparam("offset")))


def owned_page_query(owner_id: str, filters: JobFilters) -> tuple[Select[Any], Select[Any], dict[str, Any]]:
    """(page statement, count statement, their parameters without limit and offset). The page: the owner's
    filtered jobs newest first, as rows of the table's columns plus `total`, the filtered set's count (one query,
    not two). The count alone answers for a page past the end, which says nothing about the total."""
    given = _given(filters)
    names = tuple(given)
    return _page_statement(names), _count_statement(names), {"owner_id": owner_id, **given}


def list_owned(session: Session, owner_id: str, filters: JobFilters, *, limit: int,
               offset: int) -> tuple[list[dict[str, Any]], int]:
    """A page of the owner's jobs, newest first (rows of the table's columns by name), and how many match in all."""
    page, count, params = owned_page_query(owner_id, filters)
    connection = session.connection()
    rows = [dict(row._mapping) for row in connection.execute(page, {**params, "limit": limit, "offset": offset})]
    if rows:
        return rows, int(rows[0]["total"])
    return [], int(connection.execute(count, params).scalar_one())


def metric_points(session: Session, job_id: str, *, since_step: int | None, every: int,
                  limit: int) -> Sequence[tuple[int, dict[str, Any]]]:
    """(step, values) in step order; `every` keeps every k-th point of the whole series.

    Counting from the series' first point (not from `since_step`) keeps the kept points the same whether a
    client reads everything at once or polls with since_step.
    """
    if every == 1:
        stmt = select(MetricPoint.step, MetricPoint.values).where(MetricPoint.job_id == job_id)
        if since_step is not None:
            stmt = stmt.where(MetricPoint.step > since_step)
        return [(r.step, r.values) for r in session.execute(stmt.order_by(MetricPoint.step).limit(limit))]
    # Number the steps alone (an index-only scan of uq_metrics_job_step: no row's values are read), keep every
    # k-th, then fetch the values of the kept points only, by the same index.
    index = (func.row_number().over(order_by=MetricPoint.step) - 1).label("index")
    numbered = select(MetricPoint.step, index).where(MetricPoint.job_id == job_id).subquery()
    kept = select(numbered.c.step).where(numbered.c.index % every == 0)
    if since_step is not None:
        kept = kept.where(numbered.c.step > since_step)
    steps = kept.order_by(numbered.c.step).limit(limit).subquery()
    stmt = (select(MetricPoint.step, MetricPoint.values)
            .join(steps, MetricPoint.step == steps.c.step)
            .where(MetricPoint.job_id == job_id)
            .order_by(MetricPoint.step))
    return [(r.step, r.values) for r in session.execute(stmt)]


def sweep_configs(session: Session, sweep_id: str) -> list[SweepConfigRow]:
    """Every config of a sweep, in grid order."""
    rows = session.execute(
        select(Job.id, Job.sweep_index, Job.params, Job.status, Job.step, Job.total_steps, Job.latest_metrics,
               Job.final_metrics, Job.error, Job.started_at, Job.finished_at, Job.reused_from)
        .where(Job.sweep_id == sweep_id).order_by(Job.sweep_index)
    )
    return [SweepConfigRow(r.id, r.sweep_index or 0, r.params or {}, r.status, r.step, r.total_steps,
                           r.latest_metrics, r.final_metrics, r.error, r.started_at, r.finished_at, r.reused_from)
            for r in rows]


def pack_ids(session: Session, sweep_id: str) -> list[tuple[str, str | None]]:
    """(job id, pack id) of a sweep's configs that were sent to train (not the reused ones), in grid order."""
    rows = session.execute(select(Job.id, Job.pack_id).where(Job.sweep_id == sweep_id, Job.reused_from.is_(None))
                           .order_by(Job.sweep_index))
    return [(r.id, r.pack_id) for r in rows]


def tally_sweeps(session: Session, sweep_ids: Sequence[str]) -> dict[str, SweepTally]:
    """Per sweep: its configs counted by status, and the unfinished ones' steps (one grouped query)."""
    tallies = {sweep_id: SweepTally({}, 0, 0) for sweep_id in sweep_ids}
    if not sweep_ids:
        return tallies
    rows = session.execute(
        select(Job.sweep_id, Job.status, func.count(), func.sum(Job.step), func.sum(func.coalesce(Job.total_steps, 0)))
        .where(Job.sweep_id.in_(sweep_ids)).group_by(Job.sweep_id, Job.status)
    )
    for sweep_id, status, count, steps, total in rows:
        tally = tallies[str(sweep_id)]
        tally.counts[JobStatus(status)] = count
        if not JobStatus(status).is_terminal:
            tally.active_steps += int(steps or 0)
            tally.active_total_steps += int(total or 0)
    return tallies


def sweep_metric_ranges(session: Session, sweep_ids: Sequence[str], metric: str) -> dict[str, tuple[float, float]]:
    """Per sweep: (min, max) of a metric so far, over succeeded configs' final values and running configs' latest
    ones (as the sweep's best config reads them), in one grouped query; sweeps with no value are absent."""
    if not sweep_ids:
        return {}
    final, final_is_number = json_number(session, Job.final_metrics, metric)
    latest, latest_is_number = json_number(session, Job.latest_metrics, metric)
    # The guard comes first in each CASE, so a non-number is never cast (it would fail the query on PostgreSQL).
    value = case((and_(Job.status == JobStatus.SUCCEEDED, final_is_number), final),
                 (and_(Job.status == JobStatus.RUNNING, latest_is_number), latest))
    rows = session.execute(
        select(Job.sweep_id, func.min(value), func.max(value))
        .where(Job.sweep_id.in_(sweep_ids), Job.status.in_((JobStatus.SUCCEEDED, JobStatus.RUNNING)))
        .group_by(Job.sweep_id)
    )
    return {str(sweep_id): (float(low), float(high)) for sweep_id, low, high in rows if low is not None}


def latest_checkpoint(session: Session, job_id: str) -> Checkpoint | None:
    return session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.step.desc(), Checkpoint.id.desc()).limit(1)
    )


# ------------------------------------------------------------------------------------------ owner writes
def add(session: Session, values: dict[str, Any]) -> Job:
    """Insert a job row (no idempotency key) and return it."""
    job = Job(**values)
    session.add(job)
    session.flush()
    return job


def add_many(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert job rows in one statement (a sweep's configs)."""
    if rows:
        session.execute(insert(Job), list(rows))


def insert_unless_key_taken(session: Session, values: dict[str, Any]) -> bool:
    """Insert a job carrying an idempotency key; False when the owner already used the key."""
    stmt = insert_ignoring_conflicts(session, Job, ["owner_id", "idempotency_key"])
    # RETURNING, not rowcount: the driver may report -1 rows for an INSERT it did not count.
    inserted = session.execute(stmt.values(**values).returning(Job.id)).scalar_one_or_none()
    return inserted is not None


def cancel_if_queued(session: Session, job_id: str, now: datetime) -> bool:
    # Conditional, so a worker claiming the job at the same moment and this cancel cannot both win.
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(rowcount(result))


def request_cancel_if_running(session: Session, job_id: str, now: datetime) -> bool:
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(cancel_requested=True, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(rowcount(result))


def cancel_sweep_configs(session: Session, sweep_id: str, now: datetime) -> None:
    """Cancel every unfinished config of a sweep: queued ones at once, running ones at their worker's next check.

    The same conditional UPDATEs as one job's cancel, over the sweep: a config claimed at this moment is either
    cancelled while queued or asked to stop while running, never both."""
    session.execute(
        update(Job).where(Job.sweep_id == sweep_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job).where(Job.sweep_id == sweep_id, Job.status == JobStatus.RUNNING)
        .values(cancel_requested=True, updated_at=now)
        .execution_options(synchronize_session=False)
    )


# ----------------------------------------------------------------------------------------- worker: claim
def _claimable(now: datetime) -> ColumnElement[bool]:
    # Queued, or running under a lease that has run out (its worker died without finishing it).
    return or_(Job.status == JobStatus.QUEUED, and_(Job.status == JobStatus.RUNNING, lease_over(now)))


def claim(session: Session, job_id: str, *, worker_id: str, lease_seconds: float,
          max_attempts: int) -> ClaimedJob | None:
    """Claim the job for a new attempt, or return None when there is nothing to run.

    Conditional UPDATEs rather than read-then-write: on PostgreSQL the WHERE is re-checked after a concurrent
    claimer commits, so only one wins; on SQLite the UPDATE takes the write lock up front, so there is no
    read-to-write lock upgrade to fail. The usual case is one statement (the claim, RETURNING what the attempt
    needs), then, for a later attempt, a read of the recorded checkpoints it resumes from, in the claim's
    transaction.
    """
    now = utcnow()
    base = update(core_table(Job)).where(Job.id == job_id, _claimable(now))
    cancelled, spent = Job.cancel_requested.is_(True), Job.attempt >= max_attempts
    claimed = session.execute(
        base.where(~cancelled, ~spent)
        .values(
            status=JobStatus.RUNNING,
            attempt=Job.attempt + 1,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=func.coalesce(Job.started_at, now),
            updated_at=now,
        )
        .returning(Job.attempt, Job.owner_id, Job.spec, Job.spec_hash)
    ).first()
    if claimed is not None:
        # Only an attempt that holds the job writes checkpoint rows (fenced): the first attempt has none to read.
        checkpoints = () if claimed.attempt == 1 else tuple(recorded_checkpoints(session, job_id))
        return ClaimedJob(id=job_id, attempt=claimed.attempt, owner_id=claimed.owner_id, spec=claimed.spec,
                          spec_hash=claimed.spec_hash, checkpoints=checkpoints)
    finished = {"lease_owner": None, "lease_expires_at": None, "finished_at": now}
    # A cancel that arrived while the job waited (or while its dead worker held it) is final.
    if rowcount(session.execute(base.where(cancelled).values(status=JobStatus.CANCELLED, **finished))):
        return None
    # A job whose every attempt died mid-run must not loop forever.
    session.execute(base.where(spent).values(status=JobStatus.FAILED, error=gave_up_error(max_attempts), **finished))
    return None  # finished now, or terminal, or live-leased by another worker (a duplicate delivery)


# ------------------------------------------------------------------------------ worker: fenced writes
def fenced_update(session: Session, job_id: str, attempt: int, **values: Any) -> bool:
    """UPDATE the job only while `attempt` holds it (running); False when it no longer does."""
    result = session.execute(
        update(core_table(Job))
        .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING)
        .values(updated_at=utcnow(), **values)
    )
    return rowcount(result) == 1


def cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def cancels_requested(session: Session, job_ids: Sequence[str]) -> set[str]:
    """Those of the jobs whose cancel was requested (a pack's heartbeat asks for all its jobs at once)."""
    if not job_ids:
        return set()
    return set(session.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.cancel_requested.is_(True))))


def status_and_attempt(session: Session, job_id: str) -> tuple[JobStatus, int]:
    row = session.execute(select(Job.status, Job.attempt).where(Job.id == job_id)).one()
    return row.status, row.attempt


def insert_metric_points(session: Session, job_id: str, attempt: int,
                         points: Sequence[tuple[int, dict[str, Any]]]) -> None:
    """Store points at most once per (job, step): the steps a resumed attempt redoes are not stored twice."""
    rows = [{"job_id": job_id, "step": s, "values": finite_or_none(v), "attempt": attempt} for s, v in points]
    session.execute(insert_ignoring_conflicts(session, MetricPoint, ["job_id", "step"]), rows)


def recorded_checkpoints(session: Session, job_id: str) -> list[tuple[int, str, str]]:
    """(step, relpath, sha256) of every recorded checkpoint, in the order a resume prefers them last: by step,
    and for a step recorded twice (by two attempts) the newer row after the older."""
    rows = session.execute(select(Checkpoint.step, Checkpoint.relpath, Checkpoint.sha256)
                           .where(Checkpoint.job_id == job_id).order_by(Checkpoint.step, Checkpoint.id))
    return [(r.step, r.relpath, r.sha256) for r in rows]


def record_checkpoint(session: Session, job_id: str, attempt: int, *, step: int, relpath: str, sha256: str,
                      size_bytes: int, final: bool, new: bool = False) -> None:
    """Add the checkpoint's row; safe to repeat (a retried write whose first commit landed after all). new: the
    caller knows it has no row (this attempt published it and never recorded it), so nothing is looked up."""
    same = (Checkpoint.job_id == job_id, Checkpoint.sha256 == sha256, Checkpoint.step == step)
    if new:
        pass
    elif final:
        # The final checkpoint may be one recorded already (a resumed run that had finished): promote it.
        if rowcount(session.execute(update(core_table(Checkpoint)).where(*same).values(final=True))):
            return
    elif session.scalar(select(Checkpoint.id).where(*same, Checkpoint.attempt == attempt)):
        return
    session.execute(insert(core_table(Checkpoint)).values(
        job_id=job_id, step=step, attempt=attempt, sha256=sha256, size_bytes=size_bytes, final=final,
        relpath=relpath, created_at=utcnow(),
    ))


# ------------------------------------------------------------------------------------------ reconciler
def _orphaned(now: datetime) -> ColumnElement[bool]:
    return and_(Job.status == JobStatus.RUNNING, lease_over(now))


def _settle(session: Session, condition: ColumnElement[bool], **values: Any) -> list[Dispatch]:
    """UPDATE the jobs matching `condition`; return (id, queue, pack) of those changed.

    Rows another transaction holds are skipped (FOR UPDATE SKIP LOCKED on PostgreSQL), so a pass never waits
    on a worker's write, and two reconcilers never settle one job twice: the WHERE is checked again under
    the lock.
    """
    chosen = (select(Job.id).where(condition).order_by(Job.created_at).limit(BATCH)
              .with_for_update(skip_locked=True))
    rows = session.execute(
        update(Job).where(Job.id.in_(chosen.scalar_subquery()), condition).values(**values)
        .returning(Job.id, Job.queue, Job.pack_id).execution_options(synchronize_session=False)
    )
    return [Dispatch(r.id, r.queue, r.pack_id) for r in rows]


@dataclass
class SettledOrphans:
    cancelled: list[str]  # lease ran out with a cancel pending: a cancel is final
    failed: list[str]  # lease ran out on the last attempt
    requeued: list[Dispatch]  # back to queued, to be sent again (with the rest of their pack)


def settle_orphans(session: Session, now: datetime, *, max_attempts: int) -> SettledOrphans:
    """Settle every running job whose lease has run out (up to BATCH of each kind)."""
    orphaned = _orphaned(now)
    finished = {"lease_owner": None, "lease_expires_at": None, "finished_at": now, "updated_at": now}
    cancelled = _settle(session, and_(orphaned, Job.cancel_requested.is_(True)), status=JobStatus.CANCELLED,
                        **finished)
    failed = _settle(session, and_(orphaned, Job.attempt >= max_attempts), status=JobStatus.FAILED,
                     error=gave_up_error(max_attempts), **finished)
    requeued = _settle(session, orphaned, status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None,
                       updated_at=now)
    return SettledOrphans([d.id for d in cancelled], [d.id for d in failed], requeued)


def stale_queued(session: Session, now: datetime, *, lease_seconds: float) -> list[Dispatch]:
    """Queued jobs nobody claimed for a lease: their message was lost or never sent."""
    rows = session.execute(
        select(Job.id, Job.queue, Job.pack_id)
        .where(Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False),
               Job.updated_at < now - timedelta(seconds=lease_seconds))
        .order_by(Job.created_at).limit(BATCH)
    ).all()
    return [Dispatch(r.id, r.queue, r.pack_id) for r in rows]


def touch_queued(session: Session, job_ids: Sequence[str]) -> None:
    """Restart the wait of re-sent jobs: each is sent again only if still unclaimed a lease from now."""
    session.execute(update(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.QUEUED)
                    .values(updated_at=utcnow()).execution_options(synchronize_session=False))
