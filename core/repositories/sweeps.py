"""Every query about sweeps themselves; their configs are jobs (core/repositories/jobs.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.db.models import Sweep
from core.db.statements import insert_ignoring_conflicts


def get_owned(session: Session, owner_id: str, sweep_id: str) -> Sweep | None:
    return session.scalar(select(Sweep).where(Sweep.id == sweep_id, Sweep.owner_id == owner_id))


def get_by_idempotency_key(session: Session, owner_id: str, key: str) -> Sweep | None:
    return session.scalar(select(Sweep).where(Sweep.owner_id == owner_id, Sweep.idempotency_key == key))


def add(session: Session, values: dict[str, Any]) -> Sweep:
    sweep = Sweep(**values)
    session.add(sweep)
    session.flush()
    return sweep


def insert_unless_key_taken(session: Session, values: dict[str, Any]) -> bool:
    """Insert a sweep carrying an idempotency key; False when the owner already used the key."""
    stmt = insert_ignoring_conflicts(session, Sweep, ["owner_id", "idempotency_key"])
    return session.execute(stmt.values(**values).returning(Sweep.id)).scalar_one_or_none() is not None


def list_owned(session: Session, owner_id: str, *, limit: int, offset: int) -> tuple[Sequence[Sweep], int]:
    """A page of the owner's sweeps, newest first, and how many there are."""
    total = session.scalar(select(func.count()).select_from(Sweep).where(Sweep.owner_id == owner_id)) or 0
    rows = session.scalars(select(Sweep).where(Sweep.owner_id == owner_id)
                           .order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit).offset(offset))
    return rows.all(), total


def request_cancel(session: Session, sweep_id: str, now: datetime) -> None:
    session.execute(update(Sweep).where(Sweep.id == sweep_id).values(cancel_requested=True, updated_at=now)
                    .execution_options(synchronize_session=False))
