"""Request dependencies as Annotated aliases: the runtime, the session (one commit point), the caller's key.

A caller is known by `Authorization: Bearer <key>` (API clients) or by the dashboard's signed session cookie
(browsers). A cookie is ambient, so a cookie-authenticated request that changes state must also pass the CSRF
check: same origin, and the session's token echoed in `X-CSRF-Token` (scripts) or `csrf_token` (forms).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import anyio
from fastapi import Depends, Request, Response
from fastapi.datastructures import DefaultPlaceholder
from fastapi.exceptions import ResponseValidationError
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.utils import is_body_allowed_for_status_code
from sqlalchemy.orm import Session

from api.errors import Forbidden, LoginRequired, TooManyRequests, Unauthorized
from api.runtime import Runtime
from api.services import keys, signin
from api.services.signin import SignedIn
from core.db.hooks import run_after_commit, run_after_rollback
from core.db.models import ApiKey

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
T = TypeVar("T")


async def get_runtime(request: Request) -> Runtime:
    # Async although it awaits nothing: FastAPI runs a plain `def` dependency in a worker thread, a hop per request.
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
            if not session.info.get(_ENDED):  # a CommittingRoute's endpoint has not committed it already
                await _in_thread(_commit, session)


async def _in_thread(end: Callable[[Session], None], session: Session) -> None:
    # Shielded: a client that hangs up must not leave the transaction (and SQLite's write lock) open. A
    # limiter of its own: ending a transaction never queues behind threads that wait to begin one.
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(end, session, limiter=anyio.CapacityLimiter(1))


async def in_transaction(runtime: Runtime, work: Callable[[Session], T]) -> T:
    """`work` on a session of its own, then committed (and its after-commit work run) or, when it raises, rolled
    back: get_session's discipline for an async endpoint that needs a session only on some of its paths, in one
    worker thread. Waits its turn at the database first. A client that hangs up does not stop it halfway: the
    thread runs to its end whatever the request does."""
    def run() -> T:
        session = runtime.sessions()
        try:
            result = work(session)
        except BaseException:
            _roll_back(session)
            raise
        _commit(session)
        return result

    async with runtime.database_turn():
        return await anyio.to_thread.run_sync(run)


_ENDED = "narrownet.request_ended"


def _commit(session: Session) -> None:
    try:
        session.commit()
    except BaseException:
        _roll_back(session)
        raise
    session.info[_ENDED] = True
    run_after_commit(session)
    session.close()


def _roll_back(session: Session) -> None:
    try:
        session.rollback()
        run_after_rollback(session)
    finally:
        session.info[_ENDED] = True
        session.close()


class CommittingRoute(APIRoute):
    """A route whose sync endpoint does, in its one worker thread, what would otherwise take two more: commit the
    request's session as soon as the endpoint returns (get_session would, in a thread of its own), and validate
    and serialize the answer against the response model (FastAPI would, in another). Same order as before: the
    commit, the after-commit work, then the response; an endpoint that raises commits nothing (get_session rolls
    back). Routes with a response class of their own, or returning a Response, are answered as they say."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = self._in_one_thread(endpoint)
        super().__init__(path, endpoint, **kwargs)

    def _in_one_thread(self, endpoint: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(endpoint)  # FastAPI reads the parameters through __wrapped__
        def run(*args: Any, **kwargs: Any) -> Any:
            result = endpoint(*args, **kwargs)
            session = next((v for v in kwargs.values() if isinstance(v, Session)), None)
            if session is not None:
                _commit(session)
            return self._answer(result, kwargs)

        return run

    def _answer(self, result: Any, kwargs: dict[str, Any]) -> Any:
        field = self.response_field
        if (isinstance(result, Response) or field is None or not isinstance(self.response_class, DefaultPlaceholder)
                or self.response_model_include or self.response_model_exclude or self.response_model_exclude_unset
                or self.response_model_exclude_defaults or self.response_model_exclude_none):
            return result  # FastAPI's own path
        # What fastapi.routing.serialize_response does for a sync endpoint, minus its trip to a worker thread.
        value, errors = field.validate(result, {}, loc=("response",))
        if errors:
            raise ResponseValidationError(errors=errors, body=result)
        sub = next((v for v in kwargs.values() if isinstance(v, Response)), None)  # the endpoint's `response`
        status = (sub.status_code if sub is not None and sub.status_code else self.status_code) or 200
        if not is_body_allowed_for_status_code(status):
            return result
        answer = Response(field.serialize_json(value, by_alias=self.response_model_by_alias), status_code=status,
                          media_type="application/json")
        if sub is not None:
            answer.headers.raw.extend(sub.headers.raw)
        return answer


# scope="function": the commit happens before the response goes out, so a 201 means the row is there (and a
# streamed answer, like the event stream, holds no database connection while it streams).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="an API key from `narrownet keys create NAME`")
# Documented so /docs shows it; the dashboard sets it at /ui/login.
_cookie = APIKeyCookie(name=signin.COOKIE, auto_error=False,
                       description="the dashboard's session (sign in at /ui/login); state-changing requests "
                                   f"also need the {signin.CSRF_HEADER} header")


def _rate_limited(runtime: Runtime, retry_after: float | None) -> None:
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


async def get_current_key(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> ApiKey:
    """The caller's key, counted by the rate limiter. Async, so that a key found in the cache costs no trip to a
    worker thread: only a cache miss (or the dashboard's cookie) asks the database, in one, on a session of its
    own (a route that reads on the event loop opens none)."""
    if credentials is not None:
        key, retry_after = await _bearer_key(runtime, credentials.credentials)
    else:
        # Without a turn at the database (the pool still bounds it): the endpoint's session may hold one already.
        who = None if cookie is None else await runtime.in_own_session(
            lambda session: signin.signed_in(session, runtime.cookies, cookie))
        if who is None:
            raise Unauthorized("missing credentials: send the header 'Authorization: Bearer <api key>' "
                               "(or sign in at /ui/login)")
        if request.method not in SAFE_METHODS:
            check_csrf(request, request.headers.get(signin.CSRF_HEADER), who)
        key, retry_after = who.key, await runtime.limiter.ahit(who.key.id)
    _rate_limited(runtime, retry_after)
    return key


async def _bearer_key(runtime: Runtime, plaintext: str) -> tuple[ApiKey, float | None]:
    """The live key and the limiter's verdict on it; 401 for anything else."""
    digest = keys.key_digest(plaintext)
    if digest is None:
        raise Unauthorized("invalid or revoked API key")
    cached = runtime.key_cache.peek(digest)
    if cached is not None:
        # The usual request: count it and read the revocation mark in one trip, then trust the copy only if no
        # key has been revoked since it was cached.
        retry_after, mark = await runtime.admit(cached.id, read_mark=True)
        if runtime.key_cache.get(digest, mark) is not None:
            return cached, retry_after
        key = await _look_up(runtime, digest, mark)  # the mark was read before this lookup
        return key, retry_after  # counted already, and a digest names one key
    mark = await runtime.read_mark() if runtime.key_cache.seconds > 0 else None  # before the lookup
    key = await _look_up(runtime, digest, mark)
    return key, (await runtime.admit(key.id, read_mark=False))[0]


async def _look_up(runtime: Runtime, digest: str, mark: str | None) -> ApiKey:
    key = await runtime.in_own_session(lambda session: keys.authenticate_digest(session, digest))
    if key is None:
        raise Unauthorized("invalid or revoked API key")
    # Cached under the mark read before the lookup: a revoke that commits in between leaves the entry stale.
    runtime.key_cache.put(digest, key, mark)
    return key


CurrentKey = Annotated[ApiKey, Depends(get_current_key)]


def get_signed_in(request: Request, runtime: RuntimeDep, session: SessionDep) -> SignedIn:
    """The dashboard's user; a page asked for without a live session redirects to the sign-in page."""
    who = signin.signed_in(session, runtime.cookies, request.cookies.get(signin.COOKIE))
    if who is None:
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(request.url.path + query)
    _rate_limited(runtime, runtime.limiter.hit(who.key.id))
    return who


SignedInDep = Annotated[SignedIn, Depends(get_signed_in)]
