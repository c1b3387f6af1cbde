"""Result reuse and run-time estimates: jobs.spec_hash, datasets.output_dim and the throughput_samples table.

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Jobs made before this revision keep a null spec_hash: they are never reused.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("spec_hash", sa.String(64), nullable=True))
        batch.create_index("ix_jobs_owner_spec_hash", ["owner_id", "spec_hash"])
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("output_dim", sa.Integer(), nullable=True))
    op.create_table(
        "throughput_samples",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("queue", sa.String(16), nullable=False),
        sa.Column("arch", sa.String(16), nullable=False),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("flops", sa.Float(), nullable=False),
        sa.Column("flops_per_step", sa.Float(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("setup_seconds", sa.Float(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_throughput_samples"),
    )
    op.create_index("ix_throughput_samples_queue_arch", "throughput_samples", ["queue", "arch", "recorded_at"])


def downgrade() -> None:
    op.drop_table("throughput_samples")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("output_dim")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_owner_spec_hash")
        batch.drop_column("spec_hash")
