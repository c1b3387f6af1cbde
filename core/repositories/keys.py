"""Queries for API keys."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db.models import ApiKey, utcnow
from core.db.statements import rowcount


def get_active_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))


def revoke(session: Session, key_id: str) -> bool:
    result = session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return bool(rowcount(result))


def add(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.flush()
    return key
