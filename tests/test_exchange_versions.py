"""How the exchange holds a version: small ones copied into memory once, others read
through iceberg_scan — the same rows either way, and the copies bounded."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from catalog.store import Principal
from hub.context import Hub
from tests.conftest import publish_file, ticket_rows

OWNER = Principal("w", "gy_12345", "w", "steward")
SQL = "SELECT * FROM tickets ORDER BY ticket_id"


def test_small_versions_are_copied_once_large_ones_scanned(hub: Hub, tickets_file: Path) -> None:
    publish_file(hub, tickets_file, "tickets")
    copied = hub.exchange.query(SQL, OWNER).to_table()
    assert hub.exchange._copies == {"__bh_tickets_v1"}
    other = Hub.open(hub.settings)
    try:
        other.exchange.small_rows = 0  # every version through iceberg_scan
        assert other.exchange.query(SQL, OWNER).to_table().equals(copied)
        assert not other.exchange._copies
    finally:
        other.close()


def test_copies_are_bounded_and_time_travel_holds(hub: Hub, tickets_file: Path) -> None:
    publish_file(hub, tickets_file, "tickets")
    hub.exchange.max_copies = 1
    pq.write_table(ticket_rows(51, 10), tickets_file.parent / "tickets-2.parquet")
    assert hub.ingest("tickets").rows_written == 10
    assert hub.exchange.query(SQL, OWNER).to_table().num_rows == 60  # v2: copied
    v1 = hub.exchange.query(SQL, OWNER, versions={"tickets": 1}).to_table()  # v1: scanned
    assert v1.column("ticket_id").to_pylist() == list(range(1, 51))
    assert hub.exchange._copies == {"__bh_tickets_v2"}
