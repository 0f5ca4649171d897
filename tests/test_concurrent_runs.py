"""Two runs of one dataset at once (CLI and API, or two schedulers): no duplicates."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from catalog.errors import Conflict
from hub.assembly.context import Hub
from hub.cli.main import CLI_PRINCIPAL
from pipelines.ingest import extract, publish
from tests.conftest import publish_file, ticket_rows


def test_the_second_of_two_overlapping_runs_publishes_nothing(hub: Hub, tickets_file: Path) -> None:
    m = publish_file(hub, tickets_file, "tickets")  # version 1: 50 rows
    pq.write_table(ticket_rows(51, 10), tickets_file.parent / "tickets-2.parquet")
    first = hub.store.start_run("tickets", "test")
    second = hub.store.start_run("tickets", "test")
    # Both read from the same cursor, so both staged the same 10 new rows.
    a = extract(m, lake=hub.lake, guard=hub.sources, run_id=first.id)
    b = extract(m, lake=hub.lake, guard=hub.sources, run_id=second.id)
    assert a.rows_read == b.rows_read == 10
    version = publish(a, m, lake=hub.lake, store=hub.store)
    assert version is not None and version.version == 2
    with pytest.raises(Conflict, match="published by another run"):
        publish(b, m, lake=hub.lake, store=hub.store)
    sql = "SELECT count(*) AS n, count(DISTINCT ticket_id) AS d FROM tickets"
    assert hub.exchange.query(sql, CLI_PRINCIPAL).to_table().to_pylist() == [{"n": 60, "d": 60}]
    assert [v.version for v in hub.store.versions("tickets")] == [1, 2]


def test_a_refused_run_is_recorded_with_its_reason(hub: Hub, tickets_file: Path) -> None:
    publish_file(hub, tickets_file, "tickets")
    pq.write_table(ticket_rows(51, 10), tickets_file.parent / "tickets-2.parquet")
    m = hub.store.get_dataset("tickets").manifest
    stale = extract(
        m, lake=hub.lake, guard=hub.sources, run_id=hub.store.start_run("tickets", "test").id
    )
    assert hub.ingest("tickets").version == 2  # another run lands first
    with pytest.raises(Conflict):
        publish(stale, m, lake=hub.lake, store=hub.store)
    assert hub.ingest("tickets").status == "unchanged"  # and the next run finds nothing new


def test_a_lake_sees_commits_made_through_another_catalog_client(
    hub: Hub, tickets_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lake keeps the table it loaded while the catalog's metadata pointer stays put
    # (Lake._load); a commit by another client (another process here) moves the pointer.
    publish_file(hub, tickets_file, "tickets")
    loads: list[str] = []
    real_load = hub.lake.catalog.load_table
    monkeypatch.setattr(hub.lake.catalog, "load_table", lambda i: loads.append(i) or real_load(i))
    first = hub.lake.table("tickets")
    assert hub.lake.table("tickets") is first and hub.lake.current("tickets") is not None
    assert len(loads) <= 1
    other = Hub.open(hub.settings)
    try:
        pq.write_table(ticket_rows(51, 10), tickets_file.parent / "tickets-2.parquet")
        assert other.ingest("tickets").rows_written == 10
    finally:
        other.close()
    seen = hub.lake.current("tickets")
    assert seen is not None and seen.total_rows == 60
    assert hub.lake.table("tickets") is not first
