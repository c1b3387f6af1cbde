"""Queries for API keys."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from core.db.models import ApiKey, utcnow
from core.db.statements import rowcount


def get_active_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))


def get_active_by_id(session: Session, key_id: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)))


def revoke(session: Session, key_id: str) -> bool:
    result = session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return bool(rowcount(result))


def add(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.flush()
    return key


def list_all(session: Session, *, include_revoked: bool) -> Sequence[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return session.scalars(stmt).all()


def matching(session: Session, ident: str, *, limit: int) -> Sequence[ApiKey]:
    """Live keys whose id starts with `ident`, or whose shown prefix (nn_...) is `ident` or starts with it."""
    stmt = select(ApiKey).where(ApiKey.revoked_at.is_(None))
    if ident.startswith("nn_"):
        stmt = stmt.where(or_(ApiKey.prefix.startswith(ident, autoescape=True),
                              func.substr(ident, 1, func.length(ApiKey.prefix)) == ApiKey.prefix))
    else:
        stmt = stmt.where(ApiKey.id.startswith(ident, autoescape=True))
    return session.scalars(stmt.limit(limit)).all()
