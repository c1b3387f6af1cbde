"""Work that must wait for the request's transaction: run after it commits, or undone after a rollback.

Services register callbacks on the session (enqueue a job, delete a staged file); the one place that
commits (the request's session dependency) runs them. A task sent before the commit could start before its
row exists, and a task sent for a rolled-back row would run for nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

Callback = Callable[[], None]
_AFTER_COMMIT = "narrownet.after_commit"
_AFTER_ROLLBACK = "narrownet.after_rollback"


def after_commit(session: Session, callback: Callback) -> None:
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def after_rollback(session: Session, callback: Callback) -> None:
    session.info.setdefault(_AFTER_ROLLBACK, []).append(callback)


def _run(session: Session, run: str, drop: str) -> None:
    callbacks: list[Callback] = session.info.pop(run, [])
    session.info.pop(drop, None)
    for callback in callbacks:
        try:
            callback()
        except Exception:
            # The transaction's outcome is already final; one failed follow-up must not undo the others
            # or turn a committed request into an error. Each callback reports its own failure.
            log.exception("post-transaction callback %r failed", callback)


def run_after_commit(session: Session) -> None:
    _run(session, _AFTER_COMMIT, _AFTER_ROLLBACK)


def run_after_rollback(session: Session) -> None:
    _run(session, _AFTER_ROLLBACK, _AFTER_COMMIT)
