"""Queries for uploaded datasets. Always scoped to an owner."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.db.models import Dataset


def get_owned(session: Session, owner_id: str, dataset_id: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.owner_id == owner_id))


def list_owned(session: Session, owner_id: str, *, limit: int, offset: int) -> tuple[Sequence[Dataset], int]:
    stmt = select(Dataset).where(Dataset.owner_id == owner_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit)
                           .offset(offset))
    return rows.all(), total
