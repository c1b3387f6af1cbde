"""API keys: made here, shown once, stored as sha256 hex, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from sqlalchemy.orm import Session

from api.errors import InvalidInput
from core.db.models import ApiKey
from core.repositories import keys as repo

KEY_PREFIX = "nn_"


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """Add a new key named `name`; return the row and the plaintext key (the only time it exists)."""
    name = name.strip()
    if not 1 <= len(name) <= 128:
        raise InvalidInput([("name", "must be 1 to 128 characters")])
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)  # 256 random bits
    key = ApiKey(name=name, key_hash=hash_key(plaintext), prefix=plaintext[:11])
    return repo.add(session, key), plaintext


def authenticate(session: Session, plaintext: str) -> ApiKey | None:
    """The live key whose hash matches, else None."""
    if not plaintext or len(plaintext) > 256:
        return None
    digest = hash_key(plaintext)
    key = repo.get_active_by_hash(session, digest)
    # The lookup is by a hash of a 256-bit secret; the constant-time compare keeps the check itself honest.
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    return key


def revoke_key(session: Session, key_id: str) -> bool:
    return repo.revoke(session, key_id)


class KeyLookupError(LookupError):
    """No live key, or more than one, matches what was given."""


def list_keys(session: Session, *, revoked: bool) -> Sequence[ApiKey]:
    return repo.list_all(session, include_revoked=revoked)


def revoke_matching(session: Session, ident: str) -> ApiKey:
    """Revoke the one live key whose id (or id prefix, or shown key prefix nn_...) is `ident`."""
    ident = ident.strip()
    if len(ident) < 4:
        raise KeyLookupError("give at least 4 characters of the key's id or of the key (nn_...)")
    found = repo.matching(session, ident, limit=2)
    if not found:
        raise KeyLookupError(f"no live key matches {ident!r} (`narrownet keys list` shows them)")
    if len(found) > 1:
        raise KeyLookupError(f"{ident!r} matches more than one key ({found[0].id}, {found[1].id}, ...); "
                             "give more characters")
    repo.revoke(session, found[0].id)
    return found[0]
