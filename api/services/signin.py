"""Dashboard sign-in: a signed, expiring session cookie that names an API key (never holds it) and carries the
session's CSRF token.

The cookie is signed with itsdangerous (HMAC-SHA1 over a timestamped payload); a revoked key ends every session
made with it at the next request. Cookie-authenticated requests that change state must echo the CSRF token
(the `X-CSRF-Token` header from scripts, a `csrf_token` field from forms): SameSite=Strict already keeps the
cookie off cross-site requests, and the token also refuses a same-site page on another port.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from api.services.keys import authenticate
from core.db.models import ApiKey
from core.repositories import keys as keys_repo

COOKIE = "narrownet_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_SALT = "narrownet.session.v1"


@dataclass(frozen=True)
class SignedIn:
    key: ApiKey
    csrf_token: str


class SessionCookies:
    """Makes and checks session cookie values; the secret never leaves this object.

    The secret is fetched on first use, so building an app (importing api.app) touches no file.
    """

    def __init__(self, secret: Callable[[], str], max_age_seconds: int) -> None:
        self._secret = secret
        self.max_age_seconds = max_age_seconds

    @cached_property
    def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._secret(), salt=_SALT)

    def issue(self, key_id: str) -> str:
        return self._serializer.dumps({"k": key_id, "c": secrets.token_urlsafe(24)})

    def read(self, value: str) -> tuple[str, str] | None:
        """(key id, csrf token) of a genuine, unexpired cookie value; None for anything else."""
        if not value or len(value) > 1024:
            return None
        try:
            payload: Any = self._serializer.loads(value, max_age=self.max_age_seconds)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("k"), str) or not isinstance(
                payload.get("c"), str):
            return None
        return payload["k"], payload["c"]


def load_or_create_secret(path: Path) -> str:
    """The signing secret kept in `path` (0600), made on first use; concurrent first starts agree on one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text().strip()
        if len(secret) < 32:
            raise ValueError(f"{path} holds no usable session secret (fewer than 32 characters); delete it "
                             "to have a new one made, or set NARROWNET_SESSION_SECRET") from None
        return secret
    secret = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def sign_in(session: Session, cookies: SessionCookies, plaintext_key: str) -> str | None:
    """A new session cookie value for a live key; None when the key is wrong or revoked."""
    key = authenticate(session, plaintext_key)
    return None if key is None else cookies.issue(key.id)


def signed_in(session: Session, cookies: SessionCookies, value: str | None) -> SignedIn | None:
    """Who a session cookie signs in, while its key is still live."""
    parsed = cookies.read(value or "")
    if parsed is None:
        return None
    key = keys_repo.get_active_by_id(session, parsed[0])
    return None if key is None else SignedIn(key=key, csrf_token=parsed[1])


def csrf_matches(who: SignedIn, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(who.csrf_token.encode(), token.encode())
