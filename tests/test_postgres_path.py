"""The foundation's one real path: PostgreSQL → Iceberg lake → HTTP query → websocket."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from catalog.datasets.manifest import Manifest
from hub.assembly.context import Hub
from tests.conftest import PgSchema

pytestmark = pytest.mark.postgres


def fill(pg: PgSchema, first: int, n: int, minute: int) -> None:
    pg.execute(
        """
        INSERT INTO tickets
        SELECT g, (ARRAY['520102','520103','520111'])[1 + g %% 3], '噪音扰民',
               '138' || lpad(g::text, 8, '0'),
               g * 1.25, timestamptz '2024-06-01 08:00+08' + make_interval(mins => (%s + g)::int)
        FROM generate_series(%s::bigint, %s::bigint) g
        """,
        (minute, first, first + n - 1),
    )


@pytest.fixture
def tickets(pg: PgSchema, hub: Hub, make_manifest: Callable[..., Manifest]) -> Manifest:
    pg.execute(
        "CREATE TABLE tickets (ticket_id bigint PRIMARY KEY, district_code text, category text, "
        "caller_phone text, amount numeric(12,2), updated_at timestamptz)"
    )
    fill(pg, 1, 100, 0)
    schema = pg.schema
    m = make_manifest(
        source={
            "connector": "postgres",
            "profile": "hotline_db",
            "options": {"table": f"{schema}.tickets"},
            "cursor": "updated_at",
        }
    )
    hub.store.register_dataset(m)
    return m


def ws_open(base: str, token: str, channel: str, since: int | None = None) -> ClientConnection:
    ws = connect(f"ws://{base}/v1/ws", open_timeout=10)
    ws.send(json.dumps({"op": "auth", "token": token}))
    assert json.loads(ws.recv(10))["type"] == "welcome"
    ws.send(json.dumps({"op": "subscribe", "channel": channel, "since": since}))
    assert json.loads(ws.recv(10))["type"] == "subscribed"
    return ws


def query(base: str, token: str, sql: str, **extra: Any) -> dict[str, Any]:
    r = httpx.post(
        f"http://{base}/v1/query",
        headers={"Authorization": f"Bearer {token}"},
        json={"sql": sql, **extra},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_ingest_increment_query_notify_and_time_travel(
    hub: Hub, tickets: Manifest, pg: PgSchema, live: str, tokens: dict[str, str]
) -> None:
    ws = ws_open(live, tokens["developer"], "dataset:tickets")

    run1 = hub.ingest("tickets")
    assert (run1.status, run1.rows_read, run1.rows_written, run1.version) == (
        "succeeded",
        100,
        100,
        1,
    )
    event = json.loads(ws.recv(10))
    assert event["type"] == "message" and event["event"] == "dataset.updated"
    assert event["channel"] == "dataset:tickets" and event["offset"] == 1
    assert event["data"]["version"] == 1 and event["data"]["rows_added"] == 100
    source = event["source"]
    assert source.pop("event_id")  # the outbox's id: the dedupe key across epochs
    assert source == {"agency": "gy_12345", "dataset": "tickets", "version": 1}

    fill(pg, 101, 7, 10_000)
    run2 = hub.ingest("tickets")
    assert (run2.status, run2.rows_read, run2.rows_written, run2.version) == ("succeeded", 7, 7, 2)
    event = json.loads(ws.recv(10))
    assert (event["offset"], event["data"]["version"], event["data"]["total_rows"]) == (2, 2, 107)

    token = tokens["developer"]
    body = query(live, token, "SELECT count(*) AS n, count(DISTINCT ticket_id) AS d FROM tickets")
    assert body["rows"] == [{"n": 107, "d": 107}]
    assert body["versions"] == {"tickets": 2}
    new = query(
        live, token, "SELECT ticket_id, amount FROM tickets WHERE ticket_id > 100 ORDER BY 1"
    )
    assert [r["ticket_id"] for r in new["rows"]] == list(range(101, 108))
    assert Decimal(new["rows"][0]["amount"]) == Decimal("126.25")

    old = query(live, token, "SELECT count(*) AS n FROM tickets", versions={"tickets": 1})
    assert old["rows"] == [{"n": 100}] and old["versions"] == {"tickets": 1}

    run3 = hub.ingest("tickets")
    assert run3.status == "unchanged" and run3.rows_read == 0
    assert [v.version for v in hub.store.versions("tickets")] == [1, 2]
    ws.close()


def test_types_arrive_faithfully(hub: Hub, tickets: Manifest) -> None:
    hub.ingest("tickets")
    from hub.cli.main import CLI_PRINCIPAL

    table = hub.exchange.query(
        "SELECT * FROM tickets WHERE ticket_id = 3", CLI_PRINCIPAL
    ).to_table()
    row = table.to_pylist()[0]
    assert row["amount"] == Decimal("3.75")
    assert row["updated_at"].utcoffset().total_seconds() == 0
    assert row["updated_at"].isoformat() == "2024-06-01T00:03:00+00:00"
    assert str(table.schema.field("amount").type) == "decimal128(12, 2)"


def test_source_down_is_a_failed_run_with_reason(
    hub: Hub, make_manifest: Callable[..., Manifest]
) -> None:
    m = make_manifest(
        id="down",
        source={"connector": "postgres", "profile": "down", "options": {"table": "t"}},
    )
    hub.sources.sources.add_profile(
        "gy_12345",
        "down",
        "postgres",
        protected=hub.sources.protected,
        settings={"host": "127.0.0.1", "port": 1, "database": "test", "user": "postgres"},
        secrets={"password": "hunter2"},
    )
    hub.store.register_dataset(m)
    run = hub.ingest("down")
    assert run.status == "failed"
    assert run.error and "cannot connect" in run.error
    assert "hunter2" not in run.error  # secrets never leave in messages
    assert hub.store.versions("down") == []


def test_replay_after_reconnect(
    hub: Hub, tickets: Manifest, pg: PgSchema, live: str, tokens: dict[str, str]
) -> None:
    hub.ingest("tickets")
    fill(pg, 101, 3, 10_000)
    hub.ingest("tickets")
    ws = ws_open(live, tokens["operator"], "dataset:tickets", since=0)
    offsets = [json.loads(ws.recv(10))["offset"] for _ in range(2)]
    assert offsets == [1, 2]
    ws.close()
    fill(pg, 104, 3, 20_000)
    hub.ingest("tickets")
    ws = ws_open(live, tokens["operator"], "dataset:tickets", since=2)
    msg = json.loads(ws.recv(10))
    assert (msg["offset"], msg["data"]["version"]) == (3, 3)
    ws.close()


def test_an_enum_column_reads_as_text_on_full_and_incremental_reads(
    pg: PgSchema, hub: Hub, make_manifest: Callable[..., Manifest]
) -> None:
    """Discovery describes the source query as the server prepares it (enum → text); the
    full read (parallel ATTACH scan, which sees a dictionary) conforms to that."""
    pg.execute(f"CREATE TYPE {pg.schema}.ticket_state AS ENUM ('受理', '办结')")
    pg.execute(
        f"CREATE TABLE tickets (ticket_id bigint PRIMARY KEY, district_code text, "
        f"category {pg.schema}.ticket_state, caller_phone text, amount numeric(12,2), "
        "updated_at timestamptz)"
    )
    state = f"{pg.schema}.ticket_state"
    insert = (
        f"INSERT INTO tickets SELECT g, '520102', (ARRAY['受理','办结'])[1 + g %% 2]::{state}, "
        "'13800000000', 1.00, timestamptz '2024-06-01 08:00+08' + make_interval(mins => g::int) "
        "FROM generate_series(%s::bigint, %s::bigint) g"
    )
    pg.execute(insert, (1, 4))
    m = make_manifest(
        source={
            "connector": "postgres",
            "profile": "hotline_db",
            "options": {"table": f"{pg.schema}.tickets"},
            "cursor": "updated_at",
        }
    )
    hub.store.register_dataset(m)
    assert hub.ingest("tickets").rows_written == 4
    pg.execute(insert, (5, 6))
    assert hub.ingest("tickets").rows_written == 2
    from hub.cli.main import CLI_PRINCIPAL

    table = hub.exchange.query(
        "SELECT ticket_id, category FROM tickets ORDER BY ticket_id", CLI_PRINCIPAL
    ).to_table()
    assert str(table.schema.field("category").type) == "string"
    assert table.column("category").to_pylist() == ["办结", "受理"] * 3


def test_a_streamed_increment_is_staged_in_growing_row_groups(
    hub: Hub, tickets: Manifest, pg: PgSchema
) -> None:
    """An incremental read streams 16,384-row batches, which the lake writes as row
    groups of one batch, two, four and then at least 100,000 rows (catalog.lake.tables
    .row_groups): each is encoded while the next is read, and every row arrives once.
    The first batch is one row short: the row at the watermark, already loaded."""
    import pyarrow.parquet as pq

    from hub.cli.main import CLI_PRINCIPAL

    hub.ingest("tickets")
    fill(pg, 101, 250_000, 10_000)
    run = hub.ingest("tickets")
    assert (run.status, run.rows_written) == ("succeeded", 250_000)
    files = hub.lake.table("tickets").inspect.files().to_pylist()
    (added,) = [f for f in files if f["record_count"] == 250_000]
    meta = pq.ParquetFile(added["file_path"].removeprefix("file://")).metadata
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert groups[:3] == [16_383, 32_768, 65_536]
    assert all(n >= 100_000 for n in groups[3:-1]) and sum(groups) == 250_000
    counted = hub.exchange.query(
        "SELECT count(*) AS n, count(DISTINCT ticket_id) AS d FROM tickets", CLI_PRINCIPAL
    ).to_table()
    assert counted.to_pylist() == [{"n": 250_100, "d": 250_100}]
