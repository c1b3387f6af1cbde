"""Sweeps: the sweeps table, and on jobs the sweep a config belongs to, its grid position and values, its pack.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("axes", sa.JSON(), nullable=False),
        sa.Column("n_configs", sa.Integer(), nullable=False),
        sa.Column("objective_metric", sa.String(32), nullable=False),
        sa.Column("objective_mode", sa.String(8), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(["owner_id"], ["api_keys.id"], name="fk_sweeps_owner_id_api_keys"),
        sa.PrimaryKeyConstraint("id", name="pk_sweeps"),
        sa.UniqueConstraint("owner_id", "idempotency_key", name="uq_sweeps_owner_idempotency"),
    )
    op.create_index("ix_sweeps_owner_id", "sweeps", ["owner_id"])
    op.create_index("ix_sweeps_owner_created", "sweeps", ["owner_id", "created_at"])

    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("sweep_index", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("pack_id", sa.String(48), nullable=True))
        batch.create_foreign_key("fk_jobs_sweep_id_sweeps", "sweeps", ["sweep_id"], ["id"])
        batch.create_index("ix_jobs_sweep_id", ["sweep_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_sweep_id")
        batch.drop_constraint("fk_jobs_sweep_id_sweeps", type_="foreignkey")
        for column in ("pack_id", "params", "sweep_index", "sweep_id"):
            batch.drop_column(column)
    op.drop_table("sweeps")
