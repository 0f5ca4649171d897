"""Catalog baseline: the schema of the first release with migrations (every table the stores
made by themselves before).

Revision ID: c0001_baseline
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0001_baseline"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Idempotent: a catalog made before migrations is adopted by running this on it,
    # which makes only the tables it lacks (pipelines/schema.py, `upgrade`).
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "agencies" not in have:
        op.create_table(
            "agencies",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if "source_profiles" not in have:
        op.create_table(
            "source_profiles",
            sa.Column("agency_id", sa.String(length=64), nullable=False),
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("settings_json", sa.Text(), nullable=False),
            sa.Column("secrets_json", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("agency_id", "name"),
        )
    if "source_roots" not in have:
        op.create_table(
            "source_roots",
            sa.Column("agency_id", sa.String(length=64), nullable=False),
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("location", sa.Text(), nullable=False),
            sa.Column("settings_json", sa.Text(), nullable=False),
            sa.Column("secrets_json", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("agency_id", "name"),
        )
    if "datasets" not in have:
        op.create_table(
            "datasets",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("agency_id", sa.String(length=64), nullable=False),
            sa.Column("title", sa.String(length=400), nullable=False),
            sa.Column("sharing", sa.String(length=16), nullable=False),
            sa.Column("classification", sa.String(length=16), nullable=False),
            sa.Column("manifest_json", sa.Text(), nullable=False),
            sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(
                ["agency_id"],
                ["agencies.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("datasets", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_datasets_agency_id"), ["agency_id"], unique=False)
    if "principals" not in have:
        op.create_table(
            "principals",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("agency_id", sa.String(length=64), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(
                ["agency_id"],
                ["agencies.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
    if "grants" not in have:
        op.create_table(
            "grants",
            sa.Column("id", sa.String(length=32), nullable=False),
            sa.Column("dataset_id", sa.String(length=64), nullable=False),
            sa.Column("agency_id", sa.String(length=64), nullable=False),
            sa.Column("requested_by", sa.String(length=64), nullable=False),
            sa.Column("purpose", sa.Text(), nullable=False),
            sa.Column("columns_json", sa.Text(), nullable=True),
            sa.Column("row_filter_json", sa.Text(), nullable=True),
            sa.Column("unmask_json", sa.Text(), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("decided_by", sa.String(length=64), nullable=True),
            sa.Column("reason", sa.Text(), nullable=True),
            sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(
                ["agency_id"],
                ["agencies.id"],
            ),
            sa.ForeignKeyConstraint(
                ["dataset_id"],
                ["datasets.id"],
            ),
            sa.ForeignKeyConstraint(
                ["requested_by"],
                ["principals.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("grants", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_grants_agency_id"), ["agency_id"], unique=False)
            batch_op.create_index(batch_op.f("ix_grants_dataset_id"), ["dataset_id"], unique=False)
    if "runs" not in have:
        op.create_table(
            "runs",
            sa.Column("id", sa.String(length=36), nullable=False),
            sa.Column("dataset_id", sa.String(length=64), nullable=False),
            sa.Column("trigger", sa.String(length=32), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("rows_read", sa.BigInteger(), nullable=False),
            sa.Column("rows_written", sa.BigInteger(), nullable=False),
            sa.Column("bytes_written", sa.BigInteger(), nullable=False),
            sa.Column("version", sa.Integer(), nullable=True),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("details_json", sa.Text(), nullable=True),
            sa.ForeignKeyConstraint(
                ["dataset_id"],
                ["datasets.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("runs", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_runs_dataset_id"), ["dataset_id"], unique=False)
    if "tokens" not in have:
        op.create_table(
            "tokens",
            sa.Column("id", sa.String(length=32), nullable=False),
            sa.Column("principal_id", sa.String(length=64), nullable=False),
            sa.Column("secret_sha256", sa.String(length=64), nullable=False),
            sa.Column("label", sa.String(length=200), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
            sa.ForeignKeyConstraint(
                ["principal_id"],
                ["principals.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("tokens", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_tokens_principal_id"), ["principal_id"], unique=False
            )
    if "versions" not in have:
        op.create_table(
            "versions",
            sa.Column("dataset_id", sa.String(length=64), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("snapshot_id", sa.BigInteger(), nullable=False),
            sa.Column("metadata_location", sa.Text(), nullable=False),
            sa.Column("rows_added", sa.BigInteger(), nullable=False),
            sa.Column("total_rows", sa.BigInteger(), nullable=False),
            sa.Column("run_id", sa.String(length=36), nullable=True),
            sa.Column("cursor_json", sa.Text(), nullable=True),
            sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(
                ["dataset_id"],
                ["datasets.id"],
            ),
            sa.PrimaryKeyConstraint("dataset_id", "version"),
        )
    if "run_leases" not in have:
        op.create_table(
            "run_leases",
            sa.Column("run_id", sa.String(length=36), nullable=False),
            sa.Column("holder", sa.String(length=200), nullable=True),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(
                ["run_id"],
                ["runs.id"],
            ),
            sa.PrimaryKeyConstraint("run_id"),
        )
    if "outbox" not in have:
        op.create_table(
            "outbox",
            sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("event_id", sa.String(length=32), nullable=False),
            sa.Column("channel", sa.String(length=200), nullable=False),
            sa.Column("type", sa.String(length=64), nullable=False),
            sa.Column("data", sa.Text(), nullable=False),
            sa.Column("source", sa.Text(), nullable=False),
            sa.Column("ref", sa.String(length=300), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("epoch", sa.String(length=64), nullable=True),
            sa.Column("offset", sa.BigInteger(), nullable=True),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.Column("given_up_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("seq"),
            sa.UniqueConstraint("event_id"),
        )
        with op.batch_alter_table("outbox", schema=None) as batch_op:
            batch_op.create_index(
                "ix_outbox_pending", ["published_at", "given_up_at", "seq"], unique=False
            )
            batch_op.create_index(batch_op.f("ix_outbox_ref"), ["ref"], unique=False)
    if "audit_head" not in have:
        op.create_table(
            "audit_head",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("seq", sa.Integer(), nullable=False),
            sa.Column("hash", sa.String(length=64), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("key_id", sa.String(length=16), nullable=True),
            sa.Column("mac", sa.String(length=64), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
    if "audit_log" not in have:
        op.create_table(
            "audit_log",
            sa.Column("seq", sa.Integer(), nullable=False),
            sa.Column("at", sa.String(length=40), nullable=False),
            sa.Column("action", sa.String(length=32), nullable=False),
            sa.Column("principal_id", sa.String(length=64), nullable=False),
            sa.Column("agency_id", sa.String(length=64), nullable=False),
            sa.Column("datasets_json", sa.Text(), nullable=False),
            sa.Column("columns_json", sa.Text(), nullable=False),
            sa.Column("row_count", sa.BigInteger(), nullable=True),
            sa.Column("sql_fingerprint", sa.String(length=64), nullable=True),
            sa.Column("outcome", sa.String(length=16), nullable=False),
            sa.Column("detail_json", sa.Text(), nullable=False),
            sa.Column("prev_hash", sa.String(length=64), nullable=False),
            sa.Column("hash", sa.String(length=64), nullable=False),
            sa.Column("owners_json", sa.Text(), nullable=True),
            sa.Column("binds_json", sa.Text(), nullable=True),
            sa.Column("key_id", sa.String(length=16), nullable=True),
            sa.PrimaryKeyConstraint("seq"),
        )
        with op.batch_alter_table("audit_log", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_audit_log_principal_id"), ["principal_id"], unique=False
            )
    if "audit_datasets" not in have:
        op.create_table(
            "audit_datasets",
            sa.Column("seq", sa.Integer(), nullable=False),
            sa.Column("dataset_id", sa.String(length=64), nullable=False),
            sa.Column("agency_id", sa.String(length=64), nullable=False),
            sa.ForeignKeyConstraint(
                ["seq"],
                ["audit_log.seq"],
            ),
            sa.PrimaryKeyConstraint("seq", "dataset_id"),
        )
        with op.batch_alter_table("audit_datasets", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_audit_datasets_agency_id"), ["agency_id"], unique=False
            )
    if "ops_alerts" not in have:
        op.create_table(
            "ops_alerts",
            sa.Column("id", sa.String(length=36), nullable=False),
            sa.Column("rule_id", sa.String(length=100), nullable=False),
            sa.Column("key", sa.String(length=400), nullable=False),
            sa.Column("open_key", sa.String(length=520), nullable=True),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("severity", sa.String(length=16), nullable=False),
            sa.Column("title", sa.String(length=400), nullable=False),
            sa.Column("source", sa.String(length=200), nullable=False),
            sa.Column("detail_json", sa.Text(), nullable=False),
            sa.Column("count", sa.Integer(), nullable=False),
            sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("acked_by", sa.String(length=64), nullable=True),
            sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("resolved_by", sa.String(length=64), nullable=True),
            sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("note", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("open_key"),
        )
        with op.batch_alter_table("ops_alerts", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_ops_alerts_rule_id"), ["rule_id"], unique=False)
            batch_op.create_index(batch_op.f("ix_ops_alerts_status"), ["status"], unique=False)
    if "ops_order_events" not in have:
        op.create_table(
            "ops_order_events",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("order_id", sa.String(length=36), nullable=False),
            sa.Column("action", sa.String(length=32), nullable=False),
            sa.Column("actor", sa.String(length=64), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("note", sa.Text(), nullable=True),
            sa.Column("data_json", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("ops_order_events", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_ops_order_events_order_id"), ["order_id"], unique=False
            )
    if "ops_orders" not in have:
        op.create_table(
            "ops_orders",
            sa.Column("id", sa.String(length=36), nullable=False),
            sa.Column("target", sa.String(length=64), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("priority", sa.String(length=16), nullable=False),
            sa.Column("instructions", sa.Text(), nullable=False),
            sa.Column("alert_id", sa.String(length=36), nullable=True),
            sa.Column("event_json", sa.Text(), nullable=True),
            sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
            sa.Column("opened_by", sa.String(length=64), nullable=False),
            sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("ops_orders", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_ops_orders_status"), ["status"], unique=False)
            batch_op.create_index(batch_op.f("ix_ops_orders_target"), ["target"], unique=False)
    if "ops_rule_cursors" not in have:
        op.create_table(
            "ops_rule_cursors",
            sa.Column("channel", sa.String(length=200), nullable=False),
            sa.Column("epoch", sa.String(length=64), nullable=False),
            sa.Column("offset", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("channel"),
        )
    if "dataset_freshness" not in have:
        op.create_table(
            "dataset_freshness",
            sa.Column("dataset_id", sa.String(length=64), nullable=False),
            sa.Column("stale_since", sa.DateTime(timezone=True), nullable=True),
            sa.Column("announced_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("dataset_id"),
        )
    if "quality_results" not in have:
        op.create_table(
            "quality_results",
            sa.Column("run_id", sa.String(length=36), nullable=False),
            sa.Column("dataset_id", sa.String(length=64), nullable=False),
            sa.Column("suite", sa.String(length=200), nullable=False),
            sa.Column("policy", sa.String(length=16), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("success", sa.Boolean(), nullable=False),
            sa.Column("rows_checked", sa.BigInteger(), nullable=False),
            sa.Column("rows_quarantined", sa.BigInteger(), nullable=False),
            sa.Column("rows_unexpected", sa.BigInteger(), nullable=False),
            sa.Column("evaluated", sa.Integer(), nullable=False),
            sa.Column("failed", sa.Integer(), nullable=False),
            sa.Column("seconds", sa.Float(), nullable=False),
            sa.Column("validated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("quarantine_batch", sa.String(length=36), nullable=True),
            sa.Column("document", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("run_id"),
        )
        with op.batch_alter_table("quality_results", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_quality_results_dataset_id"), ["dataset_id"], unique=False
            )
    if "quarantine_actions" not in have:
        op.create_table(
            "quarantine_actions",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("batch_id", sa.String(length=36), nullable=False),
            sa.Column("dataset_id", sa.String(length=64), nullable=False),
            sa.Column("action", sa.String(length=16), nullable=False),
            sa.Column("principal", sa.String(length=64), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("rows_published", sa.BigInteger(), nullable=False),
            sa.Column("rows_discarded", sa.BigInteger(), nullable=False),
            sa.Column("rows_held", sa.BigInteger(), nullable=False),
            sa.Column("version", sa.Integer(), nullable=True),
            sa.Column("new_batch", sa.String(length=36), nullable=True),
            sa.Column("note", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("quarantine_actions", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_quarantine_actions_batch_id"), ["batch_id"], unique=False
            )
    if "quarantine_batches" not in have:
        op.create_table(
            "quarantine_batches",
            sa.Column("id", sa.String(length=36), nullable=False),
            sa.Column("dataset_id", sa.String(length=64), nullable=False),
            sa.Column("run_id", sa.String(length=36), nullable=False),
            sa.Column("path", sa.Text(), nullable=False),
            sa.Column("rows", sa.BigInteger(), nullable=False),
            sa.Column("policy", sa.String(length=16), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("failed", sa.Text(), nullable=False),
            sa.Column("previous_cursor", sa.Text(), nullable=True),
            sa.Column("cursor", sa.Text(), nullable=True),
            sa.Column("origin", sa.String(length=36), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("quarantine_batches", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_quarantine_batches_dataset_id"), ["dataset_id"], unique=False
            )


def downgrade() -> None:
    with op.batch_alter_table("quarantine_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_batches_dataset_id"))

    op.drop_table("quarantine_batches")
    with op.batch_alter_table("quarantine_actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_actions_batch_id"))

    op.drop_table("quarantine_actions")
    with op.batch_alter_table("quality_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quality_results_dataset_id"))

    op.drop_table("quality_results")
    op.drop_table("dataset_freshness")
    op.drop_table("ops_rule_cursors")
    with op.batch_alter_table("ops_orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ops_orders_target"))
        batch_op.drop_index(batch_op.f("ix_ops_orders_status"))

    op.drop_table("ops_orders")
    with op.batch_alter_table("ops_order_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ops_order_events_order_id"))

    op.drop_table("ops_order_events")
    with op.batch_alter_table("ops_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ops_alerts_status"))
        batch_op.drop_index(batch_op.f("ix_ops_alerts_rule_id"))

    op.drop_table("ops_alerts")
    with op.batch_alter_table("audit_datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_datasets_agency_id"))

    op.drop_table("audit_datasets")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_principal_id"))

    op.drop_table("audit_log")
    op.drop_table("audit_head")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_ref"))
        batch_op.drop_index("ix_outbox_pending")

    op.drop_table("outbox")
    op.drop_table("run_leases")
    op.drop_table("versions")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_principal_id"))

    op.drop_table("tokens")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_dataset_id"))

    op.drop_table("runs")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grants_dataset_id"))
        batch_op.drop_index(batch_op.f("ix_grants_agency_id"))

    op.drop_table("grants")
    op.drop_table("principals")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_agency_id"))

    op.drop_table("datasets")
    op.drop_table("source_roots")
    op.drop_table("source_profiles")
    op.drop_table("agencies")
