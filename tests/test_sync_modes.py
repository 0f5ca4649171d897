"""Sync modes against the real PostgreSQL: append by cursor (with the watermark boundary),
merge by primary key, replace; and the schema policy (evolve / freeze)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from catalog.datasets.manifest import Manifest
from hub.assembly.context import Hub
from hub.cli.main import CLI_PRINCIPAL
from tests.conftest import PgSchema

pytestmark = pytest.mark.postgres

T0 = "2024-06-01 08:00+08"


def insert(pg: PgSchema, first: int, n: int, minute: int, amount: str = "1.25") -> None:
    """Rows first..first+n-1, updated_at = T0 + minute (all the same)."""
    pg.execute(
        f"""
        INSERT INTO tickets
        SELECT g, '520102', '噪音扰民', '13800000000', g * {amount},
               timestamptz '{T0}' + make_interval(mins => %s)
        FROM generate_series(%s::bigint, %s::bigint) g
        """,
        (minute, first, first + n - 1),
    )


@pytest.fixture
def source(pg: PgSchema) -> PgSchema:
    pg.execute(
        "CREATE TABLE tickets (ticket_id bigint PRIMARY KEY, district_code text, category text, "
        "caller_phone text, amount numeric(12,2), updated_at timestamptz)"
    )
    return pg


@pytest.fixture
def dataset(
    hub: Hub, source: PgSchema, make_manifest: Callable[..., Manifest]
) -> Callable[..., Manifest]:
    def make(**src: Any) -> Manifest:
        options = {"table": f"{source.schema}.tickets"}
        options.update(src.pop("options", {}))
        m = make_manifest(
            source={
                "connector": "postgres",
                "profile": "hotline_db",
                "options": options,
                "cursor": "updated_at",
                **src,
            }
        )
        hub.store.register_dataset(m)
        return m

    return make


def lake_rows(hub: Hub, sql: str = "SELECT * FROM tickets ORDER BY ticket_id") -> list[Any]:
    return list(hub.exchange.query(sql, CLI_PRINCIPAL).to_table().to_pylist())


def counts(hub: Hub) -> tuple[int, int]:
    row = lake_rows(hub, "SELECT count(*) AS n, count(DISTINCT ticket_id) AS d FROM tickets")[0]
    return row["n"], row["d"]


def test_append_keeps_rows_that_arrive_later_with_the_watermark_value(
    hub: Hub, source: PgSchema, dataset: Callable[..., Manifest]
) -> None:
    dataset(mode="append")
    insert(source, 1, 10, minute=0)
    insert(source, 11, 5, minute=5)  # the watermark after run 1 is T0+5min
    assert hub.ingest("tickets").rows_written == 15
    # A transaction that committed late at the source, with the same updated_at:
    insert(source, 16, 3, minute=5)
    run = hub.ingest("tickets")
    assert (run.status, run.rows_read, run.rows_written) == ("succeeded", 3, 3)
    assert counts(hub) == (18, 18)
    # Nothing new: the boundary rows are read again but all recognised.
    again = hub.ingest("tickets")
    assert (again.status, again.rows_read) == ("unchanged", 0)
    insert(source, 19, 2, minute=6)
    assert hub.ingest("tickets").rows_written == 2
    assert counts(hub) == (20, 20)


def test_append_without_primary_key_dedupes_the_boundary_by_whole_row(
    hub: Hub, source: PgSchema, make_manifest: Callable[..., Manifest]
) -> None:
    m = make_manifest(
        primary_key=[],
        source={
            "connector": "postgres",
            "profile": "hotline_db",
            "options": {"table": f"{source.schema}.tickets"},
            "cursor": "updated_at",
        },
    )
    hub.store.register_dataset(m)
    insert(source, 1, 4, minute=1)
    hub.ingest("tickets")
    insert(source, 5, 2, minute=1)
    assert hub.ingest("tickets").rows_written == 2
    assert counts(hub) == (6, 6)


def test_merge_replaces_changed_rows_and_adds_new_ones(
    hub: Hub, source: PgSchema, dataset: Callable[..., Manifest]
) -> None:
    dataset(mode="merge")
    insert(source, 1, 100, minute=0)
    first = hub.ingest("tickets")
    assert (first.status, first.rows_written) == ("succeeded", 100)
    source.execute(
        "UPDATE tickets SET amount = 999.99, category = '已办结', "
        "updated_at = updated_at + interval '1 hour' WHERE ticket_id <= 10"
    )
    insert(source, 101, 5, minute=90)
    run = hub.ingest("tickets")
    assert (run.status, run.rows_read) == ("succeeded", 15)
    assert counts(hub) == (105, 105)
    rows = {r["ticket_id"]: r for r in lake_rows(hub)}
    assert rows[3]["amount"] == Decimal("999.99") and rows[3]["category"] == "已办结"
    assert rows[50]["amount"] == Decimal("62.50") and rows[50]["category"] == "噪音扰民"
    assert hub.ingest("tickets").status == "unchanged"
    assert counts(hub) == (105, 105)


def test_merge_keeps_the_latest_of_duplicate_keys_in_one_increment(
    hub: Hub, source: PgSchema, dataset: Callable[..., Manifest]
) -> None:
    insert(source, 1, 3, minute=0)
    # A query source (e.g. a change log) that returns two versions of ticket 2.
    dataset(
        mode="merge",
        options={
            "table": None,
            "query": f"SELECT * FROM {source.schema}.tickets UNION ALL "
            f"SELECT ticket_id, district_code, '旧版本', caller_phone, amount, "
            f"updated_at - interval '1 day' FROM {source.schema}.tickets WHERE ticket_id = 2",
        },
    )
    run = hub.ingest("tickets")
    assert run.status == "succeeded", run.error
    assert counts(hub) == (3, 3)
    assert lake_rows(hub)[1]["category"] == "噪音扰民"


def test_replace_mirrors_the_source_including_deletes(
    hub: Hub, source: PgSchema, dataset: Callable[..., Manifest]
) -> None:
    dataset(mode="replace")
    insert(source, 1, 20, minute=0)
    assert hub.ingest("tickets").rows_written == 20
    source.execute("DELETE FROM tickets WHERE ticket_id > 15")
    run = hub.ingest("tickets")
    assert (run.status, run.version) == ("succeeded", 2)
    assert counts(hub) == (15, 15)
    # One version per run: the delete inside the replace is not a version of its own.
    assert [v.version for v in hub.store.versions("tickets")] == [1, 2]
    assert hub.ingest("tickets").version == 3
    assert [v.version for v in hub.store.versions("tickets")] == [1, 2, 3]


def test_evolve_adds_a_new_source_column(
    hub: Hub, source: PgSchema, dataset: Callable[..., Manifest]
) -> None:
    dataset(mode="append")
    insert(source, 1, 5, minute=0)
    hub.ingest("tickets")
    source.execute("ALTER TABLE tickets ADD COLUMN handler text DEFAULT '李娜'")
    insert(source, 6, 2, minute=1)
    run = hub.ingest("tickets")
    assert run.status == "succeeded", run.error
    owner = hub.store.identity.create_principal("wm", "gy_12345", "王敏", "steward")
    sql = "SELECT * FROM tickets ORDER BY ticket_id"
    rows = hub.exchange.query(sql, owner).to_table().to_pylist()
    assert [r["handler"] for r in rows] == [None] * 5 + ["李娜"] * 2
    # Undeclared, the new column carries no personal-data tag: only its owner sees it.
    assert "handler" not in lake_rows(hub)[0]


def test_freeze_fails_the_run_with_a_drift_report(
    hub: Hub, source: PgSchema, dataset: Callable[..., Manifest]
) -> None:
    dataset(mode="append", schema_policy="freeze")
    insert(source, 1, 5, minute=0)
    hub.ingest("tickets")
    source.execute("ALTER TABLE tickets ADD COLUMN handler text, ADD COLUMN score int")
    insert(source, 6, 2, minute=1)
    run = hub.ingest("tickets")
    assert run.status == "failed"
    assert run.error and "handler" in run.error and "score" in run.error and "freeze" in run.error
    assert counts(hub) == (5, 5)
    assert [v.version for v in hub.store.versions("tickets")] == [1]
