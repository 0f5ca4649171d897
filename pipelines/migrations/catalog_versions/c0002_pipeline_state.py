"""Pipeline state (prod-airflow): dataset retirements and run handovers.

Revision ID: c0002_pipeline_state
Revises: c0001_baseline
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0002_pipeline_state"
down_revision: str | Sequence[str] | None = "c0001_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset_retirements",
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_by", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
        ),
        sa.PrimaryKeyConstraint("dataset_id"),
    )
    op.create_table(
        "run_handovers",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=250), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
        ),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("run_handovers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_run_handovers_dataset_id"), ["dataset_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_run_handovers_origin"), ["origin"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_handovers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_handovers_origin"))
        batch_op.drop_index(batch_op.f("ix_run_handovers_dataset_id"))

    op.drop_table("run_handovers")
    op.drop_table("dataset_retirements")
