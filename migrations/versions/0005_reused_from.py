"""Sweeps reuse per config: jobs.reused_from, the succeeded job whose result a config points at instead of training.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain id, not a foreign key: the row it names is the caller's own, checked when it was recorded.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("reused_from", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("reused_from")
