"""Event log baseline: the schema of the first release with migrations.

Revision ID: e0001_baseline
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e0001_baseline"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Idempotent: a catalog made before migrations is adopted by running this on it,
    # which makes only the tables it lacks (pipelines/schema.py, `upgrade`).
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "log_channels" not in have:
        op.create_table(
            "log_channels",
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("last_offset", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )
    if "log_event_ids" not in have:
        op.create_table(
            "log_event_ids",
            sa.Column("event_id", sa.String(length=64), nullable=False),
            sa.Column("channel", sa.String(length=200), nullable=False),
            sa.Column("offset", sa.BigInteger(), nullable=False),
            sa.Column("seq", sa.Integer(), nullable=False),
            sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("event_id"),
        )
    if "log_info" not in have:
        op.create_table(
            "log_info",
            sa.Column("key", sa.String(length=32), nullable=False),
            sa.Column("value", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("key"),
        )
    if "log_messages" not in have:
        op.create_table(
            "log_messages",
            sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("channel", sa.String(length=200), nullable=False),
            sa.Column("offset", sa.BigInteger(), nullable=False),
            sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
            sa.Column("type", sa.String(length=64), nullable=False),
            sa.Column("data", sa.Text(), nullable=False),
            sa.Column("source", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("seq"),
        )
        with op.batch_alter_table("log_messages", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_log_messages_channel"), ["channel"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("log_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_log_messages_channel"))

    op.drop_table("log_messages")
    op.drop_table("log_info")
    op.drop_table("log_event_ids")
    op.drop_table("log_channels")
