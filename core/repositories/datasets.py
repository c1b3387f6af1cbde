"""Queries for uploaded datasets. Always scoped to an owner."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.models import Dataset


def get_owned(session: Session, owner_id: str, dataset_id: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.owner_id == owner_id))


def newest_named(session: Session, owner_id: str, name: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.owner_id == owner_id, Dataset.name == name)
                          .order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(1))


def list_owned(session: Session, owner_id: str, *, limit: int, offset: int) -> tuple[Sequence[Dataset], int]:
    stmt = select(Dataset).where(Dataset.owner_id == owner_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit)
                           .offset(offset))
    return rows.all(), total


def owner_of(session: Session, dataset_id: str) -> str | None:
    return session.scalar(select(Dataset.owner_id).where(Dataset.id == dataset_id))


def owner_and_sha256(session: Session, dataset_id: str) -> tuple[str, str] | None:
    row = session.execute(select(Dataset.owner_id, Dataset.sha256).where(Dataset.id == dataset_id)).first()
    return None if row is None else (row.owner_id, row.sha256)


def add(session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.flush()
    return dataset
