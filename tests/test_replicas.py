"""Serving replicas (D24) and the copies rooms hold (D38): the latest large version answered
from a DuckDB-native copy — the same rows, masking and filters as from the lake; earlier
versions from the lake; the copy dropped when superseded, bounded by a row budget, and the
exchange's folder removed on close."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from catalog.identity.store import Principal
from hub.assembly.context import Hub
from hub.exchange.engine import Exchange
from hub.exchange.replicas import remove_stale
from hub.exchange.rooms import RoomObject
from tests.conftest import publish_file, ticket_rows

OWNER = Principal("w", "gy_12345", "w", "steward")
READER = Principal("r", "gy_jyj", "r", "developer")  # another agency: the phone is masked
SQL = "SELECT * FROM tickets ORDER BY ticket_id"


@pytest.fixture
def exchange(hub: Hub) -> Exchange:
    ex = hub.exchange
    ex.small_rows = 10  # 50 tickets count as large here
    assert ex.replicas is not None
    ex.warm()  # as the server does at start
    return ex


def objects(ex: Exchange, who: Principal) -> dict[int, RoomObject]:
    """The objects of ``who``'s room, by version."""
    room = next(r for r in ex.rooms.all() if r.key.agency == who.agency_id)
    return {o.version.version: o for o in room.objects()}


def test_the_latest_large_version_is_answered_from_its_replica_with_the_same_rows(
    hub: Hub, exchange: Exchange, tickets_file: Path
) -> None:
    publish_file(hub, tickets_file, "tickets")
    from_lake = {p: exchange.query(SQL, p).to_table() for p in (OWNER, READER)}
    assert objects(exchange, OWNER)[1].source in ("lake", "replica")  # as far as it got
    assert objects(exchange, READER)[1].source == "file"  # a copy made for its profile
    assert exchange.replicas is not None and exchange.replicas.wait(30)
    version = hub.store.get_version("tickets", 1)
    replica = exchange.replicas.replica(version)
    assert replica is not None and replica.rows == 50 and replica.path.exists()
    for who, table in from_lake.items():
        assert exchange.query(SQL, who).to_table().equals(table)
    assert objects(exchange, OWNER)[1].source == "replica"  # attached once it was built
    masked = set(from_lake[READER].column("caller_phone").to_pylist())
    assert masked == {"138****5678"}
    filtered = "SELECT count(*) AS n FROM tickets WHERE district_code = '520102'"
    assert exchange.query(filtered, READER).to_table().column("n").to_pylist() == [25]


def test_a_new_version_takes_the_replica_and_earlier_ones_read_the_lake(
    hub: Hub, exchange: Exchange, tickets_file: Path
) -> None:
    publish_file(hub, tickets_file, "tickets")
    exchange.query(SQL, OWNER).to_table()
    assert exchange.replicas is not None and exchange.replicas.wait(30)
    assert {v.version.version for v in exchange.replicas.ready().values()} == {1}
    pq.write_table(ticket_rows(51, 10), tickets_file.parent / "tickets-2.parquet")
    assert hub.ingest("tickets").rows_written == 10
    assert exchange.query(SQL, OWNER).to_table().num_rows == 60
    assert exchange.replicas.wait(30)
    assert {v.version.version for v in exchange.replicas.ready().values()} == {2}
    v1 = exchange.query(SQL, OWNER, versions={"tickets": 1}).to_table()
    assert v1.column("ticket_id").to_pylist() == list(range(1, 51))
    assert exchange.query(SQL, OWNER).to_table().column("ticket_id").to_pylist() == list(
        range(1, 61)
    )
    held = objects(exchange, OWNER)
    assert held[2].source == "replica"
    assert held[1].source in ("lake", "replica")  # v1 was attached before v2 came


def test_the_row_budget_leaves_large_versions_on_the_lake(
    hub: Hub, exchange: Exchange, tickets_file: Path
) -> None:
    assert exchange.replicas is not None
    exchange.replicas.max_rows = 49
    publish_file(hub, tickets_file, "tickets")
    assert exchange.query(SQL, OWNER).to_table().num_rows == 50
    assert exchange.replicas.wait(30)
    assert exchange.replicas.ready() == {}
    assert exchange.query(SQL, OWNER).to_table().num_rows == 50
    assert objects(exchange, OWNER)[1].source == "lake"


def test_the_exchange_folder_is_the_process_own_and_removed(hub: Hub) -> None:
    folder = hub.exchange.folder
    assert folder.is_dir() and folder.name.startswith(f"exchange-{os.getpid()}-")
    # a folder left by a process that has ended goes at the next start; a live one stays
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    stale = folder.with_name(f"exchange-{ended.stdout.strip()}-0123abcd")
    stale_file = folder.with_name(f"exchange-{ended.stdout.strip()}-0123abce.duckdb")
    live = folder.with_name(f"exchange-{os.getppid()}-0123abcd")
    stale.mkdir()
    stale_file.write_bytes(b"x")
    live.mkdir()
    remove_stale(folder.parent)
    assert not stale.exists() and not stale_file.exists() and live.exists() and folder.exists()
    live.rmdir()
    hub.close()
    assert not folder.exists()


def test_a_process_that_does_not_serve_builds_no_replica(hub: Hub, tickets_file: Path) -> None:
    # A CLI query reads the lake: it would drop a replica at exit before using it much.
    ex = hub.exchange
    ex.small_rows = 10
    publish_file(hub, tickets_file, "tickets")
    assert ex.query(SQL, OWNER).to_table().num_rows == 50
    assert ex.replicas is not None and ex.replicas.wait(5)
    assert ex.replicas.ready() == {}
    assert not list((ex.folder / "replicas").glob("*.duckdb"))
