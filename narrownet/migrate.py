"""`narrownet db upgrade`: the schema is made only by the Alembic migrations in migrations/."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations


def alembic_config(database_url: str) -> Config:
    # Built in code, not from an alembic.ini, so an installed package (the Docker image) finds its scripts.
    config = Config()
    config.set_main_option("script_location", str(Path(next(iter(migrations.__path__)))))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))  # configparser interpolation
    return config


def upgrade(database_url: str) -> None:
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), "head")
