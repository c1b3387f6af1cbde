"""Request dependencies as Annotated aliases: the runtime, the session (one commit point), the caller's key."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.errors import TooManyRequests, Unauthorized
from api.runtime import Runtime
from api.services import keys
from core.db.hooks import run_after_commit, run_after_rollback
from core.db.models import ApiKey


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


# scope="function": the commit happens before the response goes out, so a 201 means the row is there.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="an API key from `narrownet keys create NAME`")


def get_current_key(
    runtime: RuntimeDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    if credentials is None:
        raise Unauthorized("missing credentials: send the header 'Authorization: Bearer <api key>'")
    key = keys.authenticate(session, credentials.credentials)
    if key is None:
        raise Unauthorized("invalid or revoked API key")
    retry_after = runtime.limiter.hit(key.id)
    if retry_after is not None:
        raise TooManyRequests(
            f"rate limit of {runtime.settings.rate_limit_per_minute} requests per minute exceeded",
            headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
        )
    return key


CurrentKey = Annotated[ApiKey, Depends(get_current_key)]
