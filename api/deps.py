"""Request dependencies as Annotated aliases: the runtime, the session (one commit point), the caller's key.

A caller is known by `Authorization: Bearer <key>` (API clients) or by the dashboard's signed session cookie
(browsers). A cookie is ambient, so a cookie-authenticated request that changes state must also pass the CSRF
check: same origin, and the session's token echoed in `X-CSRF-Token` (scripts) or `csrf_token` (forms).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Annotated
from urllib.parse import urlsplit

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.errors import Forbidden, LoginRequired, TooManyRequests, Unauthorized
from api.runtime import Runtime
from api.services import keys, signin
from api.services.signin import SignedIn
from core.db.hooks import run_after_commit, run_after_rollback
from core.db.models import ApiKey

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[Session]:
    """The request's session and its one commit: after the handler, before the response is sent.

    At most `api_db_concurrency` requests of this process hold a session at once; the rest wait here, on the
    event loop, holding no thread and no connection (at most database_busy_timeout_seconds, then 503
    database_busy). Fewer threads at the database means shorter turns at SQLite's write lock and at the GIL.
    Work registered with core.db.hooks (enqueueing a job) runs only once the commit has succeeded.
    """
    async with runtime.database_turn():
        session = runtime.sessions()
        try:
            yield session
        except BaseException:
            await _in_thread(_roll_back, session)
            raise
        else:
            await _in_thread(_commit, session)


async def _in_thread(end: Callable[[Session], None], session: Session) -> None:
    # Shielded: a client that hangs up must not leave the transaction (and SQLite's write lock) open. A
    # limiter of its own: ending a transaction never queues behind threads that wait to begin one.
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(end, session, limiter=anyio.CapacityLimiter(1))


def _commit(session: Session) -> None:
    try:
        session.commit()
    except BaseException:
        _roll_back(session)
        raise
    run_after_commit(session)
    session.close()


def _roll_back(session: Session) -> None:
    try:
        session.rollback()
        run_after_rollback(session)
    finally:
        session.close()


# scope="function": the commit happens before the response goes out, so a 201 means the row is there (and a
# streamed answer, like the event stream, holds no database connection while it streams).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="an API key from `narrownet keys create NAME`")
# Documented so /docs shows it; the dashboard sets it at /ui/login.
_cookie = APIKeyCookie(name=signin.COOKIE, auto_error=False,
                       description="the dashboard's session (sign in at /ui/login); state-changing requests "
                                   f"also need the {signin.CSRF_HEADER} header")


def _rate_limit(runtime: Runtime, key: ApiKey) -> None:
    retry_after = runtime.limiter.hit(key.id)
    if retry_after is not None:
        raise TooManyRequests(
            f"rate limit of {runtime.settings.rate_limit_per_minute} requests per minute exceeded",
            headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
        )


def check_same_origin(request: Request) -> None:
    """Refuse a request that a page of another origin made the browser send (browsers say so in Origin and
    Sec-Fetch-Site on every POST)."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("cross-origin request refused", code="csrf_failed")
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise Forbidden("cross-site request refused", code="csrf_failed")


def check_csrf(request: Request, token: str | None, who: SignedIn) -> None:
    """Refuse a cookie-authenticated state change that another page could have made the browser send."""
    check_same_origin(request)
    if not signin.csrf_matches(who, token):
        raise Forbidden(f"missing or wrong CSRF token: send the page's token in the {signin.CSRF_HEADER} header",
                        code="csrf_failed")


def get_current_key(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> ApiKey:
    if credentials is not None:
        key = keys.authenticate(session, credentials.credentials, runtime.key_cache)
        if key is None:
            raise Unauthorized("invalid or revoked API key")
    else:
        who = signin.signed_in(session, runtime.cookies, cookie)
        if who is None:
            raise Unauthorized("missing credentials: send the header 'Authorization: Bearer <api key>' "
                               "(or sign in at /ui/login)")
        if request.method not in SAFE_METHODS:
            check_csrf(request, request.headers.get(signin.CSRF_HEADER), who)
        key = who.key
    _rate_limit(runtime, key)
    return key


CurrentKey = Annotated[ApiKey, Depends(get_current_key)]


def get_signed_in(request: Request, runtime: RuntimeDep, session: SessionDep) -> SignedIn:
    """The dashboard's user; a page asked for without a live session redirects to the sign-in page."""
    who = signin.signed_in(session, runtime.cookies, request.cookies.get(signin.COOKIE))
    if who is None:
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(request.url.path + query)
    _rate_limit(runtime, who.key)
    return who


SignedInDep = Annotated[SignedIn, Depends(get_signed_in)]
