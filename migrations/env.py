"""Alembic environment: the URL comes from core.settings unless the caller put one on the config.

`core.db.migrate` (and tests) set `config.attributes["database_url"]`; the `alembic` command line falls back
to the one Settings object, so both run the same migrations against the same database.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, event, pool

from core.db.models import Base
from core.db.session import sqlalchemy_url
from core.settings import get_settings

config = context.config
target_metadata = Base.metadata

# Only the alembic CLI (which has an ini file) configures logging; the API keeps its own.
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = config.attributes.get("database_url") or get_settings().resolved_database_url
    return sqlalchemy_url(url)


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = database_url()
    engine = create_engine(url, poolclass=pool.NullPool)
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            # Batch mode rebuilds a table by copy, drop and rename; with foreign keys on, the drop would
            # cascade into child rows (metrics, checkpoints), so migrations run with them off.
            cur.execute("PRAGMA foreign_keys=OFF")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    try:
        with engine.connect() as connection:
            # SQLite cannot ALTER most things in place; batch mode makes the same migration run on both.
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                              compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
