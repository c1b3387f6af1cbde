"""API keys: made here, shown once, stored as sha256 hex, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import weakref
from collections.abc import Sequence

from sqlalchemy.orm import Session

from api.errors import InvalidInput
from core.db.hooks import after_commit
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


class KeyCache:
    """Live keys found recently, by hash: most requests skip the key query.

    An entry holds while it is younger than `seconds` (0: nothing is cached) and the revocation mark read before
    its lookup is still the current one (api.services.key_revocations): a revoke anywhere writes a new mark, so it
    holds at once in every process. A key revoked in this process is also dropped here at once. Only live keys
    are kept, as detached copies that no session can write back.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._found: dict[str, tuple[float, str, ApiKey]] = {}  # digest -> (expires, mark, key)
        self._lock = threading.Lock()
        _caches.add(self)

    def _unexpired(self, digest: str) -> tuple[float, str, ApiKey] | None:
        with self._lock:
            hit = self._found.get(digest)
        return None if hit is None or hit[0] < time.monotonic() else hit

    def peek(self, digest: str) -> ApiKey | None:
        """The cached key, if there is one not yet expired, whatever mark it was cached under."""
        hit = self._unexpired(digest)
        return None if hit is None else hit[2]

    def get(self, digest: str, mark: str | None) -> ApiKey | None:
        """The cached key, if it was cached under `mark` (None, an unreadable mark, trusts nothing)."""
        hit = None if mark is None else self._unexpired(digest)
        return None if hit is None or hit[1] != mark else hit[2]

    def put(self, digest: str, key: ApiKey, mark: str | None) -> None:
        """Keep `key`, found by a lookup made after `mark` was read (never before: a revoke that commits in
        between must leave the entry stale)."""
        if self.seconds <= 0 or mark is None:
            return
        copy = ApiKey(id=key.id, name=key.name, key_hash=key.key_hash, prefix=key.prefix,
                      created_at=key.created_at, revoked_at=None)
        with self._lock:
            if len(self._found) > 10_000:  # many keys, or many marks: start over rather than grow
                self._found = {}
            self._found[digest] = (time.monotonic() + self.seconds, mark, copy)

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._found = {d: hit for d, hit in self._found.items() if hit[2].id != key_id}


_caches: weakref.WeakSet[KeyCache] = weakref.WeakSet()


def _forget_everywhere(key_id: str) -> None:
    for cache in list(_caches):
        cache.forget(key_id)


def key_digest(plaintext: str) -> str | None:
    """The stored form of a presented key; None for one that cannot be a key (empty or oversized)."""
    if not plaintext or len(plaintext) > 256:
        return None
    return hash_key(plaintext)


def authenticate(session: Session, plaintext: str) -> ApiKey | None:
    """The live key whose hash matches, else None (a database lookup)."""
    digest = key_digest(plaintext)
    return None if digest is None else authenticate_digest(session, digest)


def authenticate_digest(session: Session, digest: str) -> ApiKey | None:
    key = repo.get_active_by_hash(session, digest)
    # The lookup is by a hash of a 256-bit secret; the constant-time compare keeps the check itself honest.
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    return key


def revoke_key(session: Session, key_id: str) -> bool:
    """Revoke a key. This process's caches drop it at once; for other processes, write a new revocation mark
    once the revoke has committed (api.services.key_revocations; `narrownet keys revoke` does)."""
    revoked = repo.revoke(session, key_id)
    _forget_on_revoke(session, key_id)
    return revoked


def _forget_on_revoke(session: Session, key_id: str) -> None:
    # Now, and once more after the commit: a request that read the key before the commit may have cached it.
    _forget_everywhere(key_id)
    after_commit(session, lambda: _forget_everywhere(key_id))


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
    _forget_on_revoke(session, found[0].id)
    return found[0]
