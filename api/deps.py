"""Request dependencies as Annotated aliases: the runtime, the session (one commit point), the caller's key."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated

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


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """The request's session and its one commit: after the handler, before the response is sent.

    Work registered with core.db.hooks (enqueueing a job) runs only once the commit has succeeded.
    """
    session = runtime.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        run_after_rollback(session)
        raise
    else:
        run_after_commit(session)
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
