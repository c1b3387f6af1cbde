"""Plain submissions on the event loop, where the database allows.

Most POST /v1/jobs need nothing but their own row: data that is named by the spec alone (synthetic, digits,
mnist5k), no Reuse header, no dry run. Through a threaded session such a submission paid for a trip to a worker
thread, the ORM's unit of work, and a round trip for each of BEGIN, the owner's lock, the count, the insert and
COMMIT (bench/RESULTS.md: ~3 ms of the API's CPU against ~0.5 ms for the same request with no database at all).

On PostgreSQL it is now a transaction on the runtime's asyncio write engine, straight on the driver, in one round
trip of prepared statements (core.db.driver_reads.fetch_each_in_transaction): the owner's queue lock, then an
INSERT ... SELECT that adds the job only while the owner has fewer than max_queued_jobs_per_user queued
(core.repositories.jobs.insert_within_cap). Submissions that arrive while one such transaction is in flight go
together in the next (api/grouping.py): each owner's lock, then each insert. The cap holds as it does for the
jobs service: each count runs under the lock, after every insert that committed before it and every insert before
it in its own transaction. Once committed, the jobs are sent to their queues by the runtime's sender thread
(api/sender.py), in one batch, as the service's after-commit hook would send them.

A submission this path does not take, or one that inserts nothing (the cap is full, or its Idempotency-Key was
used before), gets None here and goes through the jobs service, which answers those cases (the 429, the replay,
the 409) as it always has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Executable
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api.errors import DatabaseBusy
from api.services import jobs, reuse
from core.db.driver_reads import fetch_each_in_transaction
from core.db.errors import is_unavailable
from core.db.models import ApiKey, JobStatus
from core.repositories.jobs import LOCK_OWNER, insert_within_cap
from trainer.spec import DigitsData, JobSpec, Mnist5kData, SyntheticData

if TYPE_CHECKING:  # the runtime builds this module's group commit
    from api.runtime import Runtime

# Data whose identity (for spec_hash) needs no look-up and no file read.
PLAIN_SOURCES = (SyntheticData, DigitsData, Mnist5kData)


def is_plain(runtime: Runtime, spec: JobSpec) -> bool:
    return runtime.plain_writes is not None and isinstance(spec.data, PLAIN_SOURCES)


async def submit_plain(runtime: Runtime, owner: ApiKey, spec: JobSpec,
                       idempotency_key: str | None) -> dict[str, Any] | None:
    """The new job's row, committed and sent to its queue; None when nothing was inserted (see above)."""
    assert runtime.plain_writes is not None and isinstance(spec.data, PLAIN_SOURCES)
    dumped = spec.model_dump(mode="json")  # once, for both hashes and the row
    values = jobs.new_job_values(owner, spec, jobs.request_hash(spec, dumped), idempotency_key,
                                 reuse.spec_hash_given(spec, runtime.settings, dumped=dumped), dumped)
    # On the driver, past SQLAlchemy's type processing: JSON as the text it would write, an enum as its value.
    params = {**values, "spec": json.dumps(values["spec"]), "status": JobStatus.QUEUED.value,
              "queued": JobStatus.QUEUED.value, "cap": runtime.settings.max_queued_jobs_per_user}
    return await runtime.plain_writes.run(params)


def group_steps(batch: Sequence[dict[str, Any]]) -> tuple[list[tuple[Executable, dict[str, Any]]], int]:
    """A group's statements (commit_plain) and how many of them, first, are owners' locks."""
    owners = sorted({values["owner_id"] for values in batch})
    return [*((LOCK_OWNER, {"owner_id": owner}) for owner in owners),
            *((insert_within_cap(values["idempotency_key"] is not None), values) for values in batch)], len(owners)


def one_may_cause(error: Exception) -> bool:
    """Whether a failed group of plain submissions is worth writing one by one: an error of one submission (a
    constraint, a value) or of one owner (its lock not granted in time, a deadlock), not one that each would meet
    again (no turn at the database or no pooled connection in time, the database unreachable)."""
    return not isinstance(error, DatabaseBusy | PoolTimeoutError) and not is_unavailable(error)


async def commit_plain(runtime: Runtime, batch: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Plain submissions (insert_within_cap's parameters) in one transaction: each owner's queue lock, in the order
    of the owners' ids (two transactions that both lock owners a and b then never wait on each other in a cycle),
    then each insert in the batch's order, each counting its owner's queued jobs after the inserts before it.
    Once committed, the jobs go to their queues, even if their clients have gone (the reconciler would, later).
    Each submission's row, or None when it inserted nothing (the cap, or a used Idempotency-Key)."""
    assert runtime.write_engine is not None
    steps, locks = group_steps(batch)
    async with runtime.database_turn():
        results = await fetch_each_in_transaction(runtime.write_engine, steps)
    rows = [found[0] if found else None for found in results[locks:]]
    created = [(row["id"], row["queue"]) for row in rows if row is not None]
    if created:
        await runtime.send_all(created)
    return rows
