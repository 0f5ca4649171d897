"""How the exchange reads a version: its Parquet files by field id, or iceberg_scan when
that would not be exact — the same rows either way."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from catalog.store import Principal
from hub.context import Hub
from tests.conftest import publish_file, ticket_rows

OWNER = Principal("w", "gy_12345", "w", "steward")
SQL = "SELECT * FROM tickets ORDER BY ticket_id"


def test_versions_are_read_from_their_files_and_time_travel_holds(
    hub: Hub, tickets_file: Path
) -> None:
    publish_file(hub, tickets_file, "tickets")
    pq.write_table(ticket_rows(51, 10), tickets_file.parent / "tickets-2.parquet")
    assert hub.ingest("tickets").rows_written == 10
    latest = hub.exchange._state().latest["tickets"]
    assert hub.exchange._scan_sql(latest).startswith("SELECT * FROM read_parquet([")
    assert hub.exchange.query(SQL, OWNER).to_table().num_rows == 60
    first = hub.exchange.query(SQL, OWNER, versions={"tickets": 1}).to_table()
    assert first.column("ticket_id").to_pylist() == list(range(1, 51))


def test_a_version_without_a_plain_file_plan_is_read_through_iceberg(
    hub: Hub, tickets_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_file(hub, tickets_file, "tickets")
    direct = hub.exchange.query(SQL, OWNER).to_table()
    monkeypatch.setattr("hub.exchange.data_files", lambda *_: None)  # e.g. delete files
    other = Hub.open(hub.settings)
    try:
        version = other.exchange._state().latest["tickets"]
        assert other.exchange._scan_sql(version).startswith("SELECT * FROM iceberg_scan(")
        assert other.exchange.query(SQL, OWNER).to_table().equals(direct)
    finally:
        other.close()
