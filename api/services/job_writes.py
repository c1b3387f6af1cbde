"""Plain submissions on the event loop, where the database allows.

Most POST /v1/jobs need nothing but their own row: data that is named by the spec alone (synthetic, digits,
mnist5k), no Reuse header, no dry run. Through a threaded session such a submission paid for a trip to a worker
thread, the ORM's unit of work, and a round trip for each of BEGIN, the owner's lock, the count, the insert and
COMMIT (bench/RESULTS.md: ~3 ms of the API's CPU against ~0.5 ms for the same request with no database at all).

On PostgreSQL it is now one transaction on the runtime's asyncio write engine, straight on the driver, in one round
trip of prepared statements (core.db.driver_reads.fetch_dicts_in_transaction): the owner's queue lock, then an
INSERT ... SELECT that adds the job only while the owner has fewer than max_queued_jobs_per_user queued
(core.repositories.jobs.insert_within_cap). The cap holds as it does for the jobs service: the count runs under
the lock, after every insert that committed before it. Once committed, the job is sent to its queue by the
runtime's sender thread (api/sender.py), batched with the jobs that concurrent requests send, as the service's
after-commit hook would send it.

A submission this path does not take, or one that inserts nothing (the cap is full, or its Idempotency-Key was
used before), gets None here and goes through the jobs service, which answers those cases (the 429, the replay,
the 409) as it always has.
"""

from __future__ import annotations

import json
from typing import Any

import anyio

from api.runtime import Runtime
from api.services import jobs, reuse
from core.db.driver_reads import fetch_dicts_in_transaction
from core.db.models import ApiKey, JobStatus
from core.repositories.jobs import LOCK_OWNER, insert_within_cap
from trainer.spec import DigitsData, JobSpec, Mnist5kData, SyntheticData

# Data whose identity (for spec_hash) needs no look-up and no file read.
PLAIN_SOURCES = (SyntheticData, DigitsData, Mnist5kData)


def is_plain(runtime: Runtime, spec: JobSpec) -> bool:
    return runtime.write_engine is not None and isinstance(spec.data, PLAIN_SOURCES)


async def submit_plain(runtime: Runtime, owner: ApiKey, spec: JobSpec,
                       idempotency_key: str | None) -> dict[str, Any] | None:
    """The new job's row, committed and sent to its queue; None when nothing was inserted (see above)."""
    assert runtime.write_engine is not None and isinstance(spec.data, PLAIN_SOURCES)
    dumped = spec.model_dump(mode="json")  # once, for both hashes and the row
    values = jobs.new_job_values(owner, spec, jobs.request_hash(spec, dumped), idempotency_key,
                                 reuse.spec_hash_given(spec, runtime.settings, dumped=dumped), dumped)
    # On the driver, past SQLAlchemy's type processing: JSON as the text it would write, an enum as its value.
    params = {**values, "spec": json.dumps(values["spec"]), "status": JobStatus.QUEUED.value,
              "queued": JobStatus.QUEUED.value, "cap": runtime.settings.max_queued_jobs_per_user}
    async with runtime.database_turn():
        rows = await fetch_dicts_in_transaction(runtime.write_engine, [
            (LOCK_OWNER, {"owner_id": owner.id}), (insert_within_cap(idempotency_key is not None), params)])
    if not rows:
        return None
    row = rows[0]
    # Committed: the job is sent even if the client has gone (the reconciler would, later).
    with anyio.CancelScope(shield=True):
        await runtime.send(row["id"], row["queue"])
    return row
