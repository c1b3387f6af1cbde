"""The per-user caps on queued work, checked so that they hold under concurrent submissions.

Every path that adds queued work for a user goes through one of these: a job through `insert_within_queued_cap`
(max_queued_jobs_per_user), a sweep's configs through `insert_within_queued_config_cap`
(max_queued_sweep_configs_per_user). Both count under the same per-owner lock, held until the request commits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from api.errors import TooManyRequests
from core.db.models import ApiKey
from core.repositories import jobs as jobs_repo
from core.settings import Settings

T = TypeVar("T")

# A slot frees when one of the user's jobs starts or is cancelled; when that happens is not known here.
QUEUE_FULL_RETRY_AFTER_SECONDS = 10


def insert_within_queued_cap(session: Session, owner: ApiKey, settings: Settings, insert: Callable[[], T], *,
                             slots: int = 1) -> T:
    """Run `insert` (which adds `slots` queued jobs' worth of work) unless that would take the owner past
    max_queued_jobs_per_user; then 429 too_many_queued_jobs with Retry-After.

    The count and the insert happen under the owner's lock (core.repositories.jobs.count_queued_locked),
    held until the request commits: N concurrent submissions at a cap of C leave exactly C queued.
    """
    cap = settings.max_queued_jobs_per_user
    queued = jobs_repo.count_queued_locked(session, owner.id, wait_seconds=settings.database_busy_timeout_seconds)
    if queued + slots > cap:
        wanted = "" if slots == 1 else f" and this submission adds {slots}"
        raise TooManyRequests(f"you already have {queued} queued jobs{wanted}; at most {cap} may wait at once. "
                              "Wait for some to start, or cancel some", code="too_many_queued_jobs",
                              headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_SECONDS)})
    return insert()


def insert_within_queued_config_cap(session: Session, owner: ApiKey, settings: Settings, insert: Callable[[], T], *,
                                    slots: int) -> T:
    """Run `insert` (a sweep adding `slots` queued configs) unless the owner's queued sweep configs would pass
    max_queued_sweep_configs_per_user; then 429 too_many_queued_configs with Retry-After. Under the owner's
    queue lock, like the jobs' cap."""
    jobs_repo.lock_owner_queue(session, owner.id, wait_seconds=settings.database_busy_timeout_seconds)
    queued = jobs_repo.count_queued_sweep_configs(session, owner.id)
    cap = settings.max_queued_sweep_configs_per_user
    if queued + slots > cap:
        raise TooManyRequests(
            f"this sweep's {slots} configs and your {queued} queued ones exceed the {cap} queued sweep configs "
            "allowed; wait for some to start or cancel a sweep", code="too_many_queued_configs",
            headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_SECONDS)})
    return insert()
