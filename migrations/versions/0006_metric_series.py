"""Finished jobs' metric series packed per metric (metric_series), for charts of many runs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Jobs that finished before this revision have no rows: they are read point by point, as before.
    op.create_table(
        "metric_series",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("steps", sa.LargeBinary(), nullable=False),
        sa.Column("values", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_metric_series_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "metric", name="pk_metric_series"),
    )


def downgrade() -> None:
    op.drop_table("metric_series")
