"""How a room holds a version: small ones copied into its memory once, others read from
the lake (the owner) or from a copy made for the reader's profile — the same rows either
way, and the copies bounded."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from catalog.identity.store import Principal
from hub.assembly.context import Hub
from tests.conftest import publish_file, ticket_rows

OWNER = Principal("w", "gy_12345", "w", "steward")
READER = Principal("r", "gy_hbj", "r", "developer")
SQL = "SELECT * FROM tickets ORDER BY ticket_id"


def sources(hub: Hub, who: Principal) -> dict[int, str]:
    room = next(r for r in hub.exchange.rooms.all() if r.key.agency == who.agency_id)
    return {o.version.version: o.source for o in room.objects()}


def test_small_versions_are_copied_once_large_ones_scanned(hub: Hub, tickets_file: Path) -> None:
    publish_file(hub, tickets_file, "tickets")
    copied = {p: hub.exchange.query(SQL, p).to_table() for p in (OWNER, READER)}
    assert sources(hub, OWNER) == {1: "copy"} and sources(hub, READER) == {1: "copy"}
    other = Hub.open(hub.settings)
    try:
        other.exchange.small_rows = 0  # the owner reads the lake, a reader a profile file
        for who, table in copied.items():
            assert other.exchange.query(SQL, who).to_table().equals(table)
        assert sources(other, OWNER) == {1: "lake"} and sources(other, READER) == {1: "file"}
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
    assert sources(hub, OWNER) == {2: "copy", 1: "lake"}
