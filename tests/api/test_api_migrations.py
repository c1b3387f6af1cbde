"""Alembic is the only way the schema is made: it must build exactly the models' schema, and take it down
again, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, pool

from core.db import migrate
from core.db.models import Base
from core.db.session import sqlalchemy_url
from tests.service_guard import temporary_postgres_database

TABLES = {"api_keys", "datasets", "sweeps", "jobs", "metrics", "metric_series", "checkpoints", "throughput_samples"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.service)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody else uses, with nothing in it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        with temporary_postgres_database("narrownet_migration_test") as url:
            yield url


def schema_diff(url: str, metadata: MetaData) -> list:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_matches_the_models_and_downgrade_removes_everything(empty_database: str) -> None:
    assert migrate.current_revision(empty_database) is None

    migrate.upgrade(empty_database)
    assert migrate.current_revision(empty_database) == migrate.head_revision()
    assert tables(empty_database) == TABLES | {"alembic_version"}
    assert schema_diff(empty_database, Base.metadata) == []
    # The comparison does look at the database: against no models, every table is reported.
    assert {d[1].name for d in schema_diff(empty_database, MetaData()) if d[0] == "remove_table"} == TABLES

    migrate.upgrade(empty_database)  # idempotent: already at head
    migrate.downgrade(empty_database, "base")
    assert migrate.current_revision(empty_database) is None
    assert tables(empty_database) <= {"alembic_version"}

    migrate.upgrade(empty_database)  # and back up again from base
    assert schema_diff(empty_database, Base.metadata) == []


def test_alembic_command_line_uses_the_settings_url(tmp_path: Path) -> None:
    """`alembic upgrade head` (the ini file) reads NARROWNET_DATABASE_URL like everything else."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NARROWNET_")}
    env["NARROWNET_DATABASE_URL"] = url
    subprocess.run([sys.executable, "-m", "alembic", "-c", str(root / "alembic.ini"), "upgrade", "head"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert schema_diff(url, Base.metadata) == []
