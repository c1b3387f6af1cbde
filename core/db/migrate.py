"""Run the Alembic migrations from code (`narrownet db upgrade`, the API's embedded start, tests).

The migration scripts live in migrations/ next to the api package; the URL is passed on the Alembic config
(`attributes["database_url"]`), so callers never touch process-global settings to point it elsewhere.
"""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import OperationalError

from core.db.session import sqlalchemy_url
from core.settings import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url or get_settings().resolved_database_url
    return config


def wait_for_database(url: str, timeout: float, poll: float = 1.0) -> None:
    """Return once the database at `url` accepts a connection; re-raise the last OperationalError after `timeout`
    seconds. Compose starts the database beside us, and not every engine holds us back until it is healthy."""
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect():
                    return
            except OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(poll)
    finally:
        engine.dispose()


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database at `url` (default: the configured one) up to `revision`."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None, revision: str) -> None:
    """Take the database down to `revision` ("base" removes every table narrownet made)."""
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision among the migration scripts."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at, or None for an empty one."""
    url = sqlalchemy_url(url or get_settings().resolved_database_url)
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
