"""API keys: made here, shown once, stored as sha256 hex, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

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
