"""MySQL/MariaDB connector against the machine's real MariaDB (a fresh database per test)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

import pytest

from catalog.datasets.manifest import Manifest
from connectors.mysql import MySQLConnector
from hub.assembly.context import Hub
from hub.cli.main import CLI_PRINCIPAL
from tests.conftest import MySQLDatabase, mysql_profile

pytestmark = pytest.mark.mysql

COLUMNS = [
    {"name": "station_id", "type": "int64"},
    {"name": "station_name", "type": "string"},
    {"name": "district_code", "type": "string"},
    {"name": "pm25", "type": "decimal(8,2)"},
    {"name": "aqi", "type": "int32"},
    {"name": "measured_at", "type": "timestamptz"},
]


@pytest.fixture
def readings(mysql: MySQLDatabase) -> MySQLDatabase:
    mysql.execute(
        "CREATE TABLE readings (station_id BIGINT PRIMARY KEY, station_name VARCHAR(64), "
        "district_code CHAR(6), pm25 DECIMAL(8,2), aqi INT, measured_at DATETIME(6), "
        "KEY (measured_at)) CHARACTER SET utf8mb4"
    )
    return mysql


def add(db: MySQLDatabase, first: int, n: int, hour: int, pm25: str = "35.5") -> None:
    rows = [
        (i, f"贵阳市{i}号监测站𠮷", "520102", pm25, 40 + i, f"2024-06-01 {hour:02d}:00:00.250000")
        for i in range(first, first + n)
    ]
    with db.conn.cursor() as cur:
        cur.executemany("INSERT INTO readings VALUES (%s, %s, %s, %s, %s, %s)", rows)


@pytest.fixture
def dataset(
    hub: Hub, readings: MySQLDatabase, make_manifest: Callable[..., Manifest]
) -> Callable[..., Manifest]:
    def make(mode: str = "append", **options: object) -> Manifest:
        m = make_manifest(
            id="air",
            agency="gy_hbj",
            columns=COLUMNS,
            primary_key=["station_id"],
            block_keys=[{"column": "district_code"}],
            source={
                "connector": "mysql",
                "profile": mysql_profile(hub, "gy_hbj", readings.name),
                "options": {"table": "readings", **options},
                "cursor": "measured_at",
                "mode": mode,
            },
        )
        hub.store.register_dataset(m)
        return m

    return make


def rows(hub: Hub) -> list[dict[str, object]]:
    sql = "SELECT * FROM air ORDER BY station_id"
    return list(hub.exchange.query(sql, CLI_PRINCIPAL).to_table().to_pylist())


def test_types_are_faithful(hub: Hub, readings: MySQLDatabase, dataset: Callable[..., Manifest]):
    dataset(time_zone="Asia/Shanghai")
    add(readings, 1, 3, hour=8, pm25="123456.78")
    run = hub.ingest("air")
    assert (run.status, run.rows_written) == ("succeeded", 3), run.error
    first = rows(hub)[0]
    assert first["station_name"] == "贵阳市1号监测站𠮷"  # utf8mb4, outside the BMP
    assert first["pm25"] == Decimal("123456.78")
    # 08:00 wall-clock in Beijing is 00:00 UTC.
    assert first["measured_at"] == dt.datetime(2024, 6, 1, 0, 0, 0, 250000, tzinfo=dt.UTC)


def test_incremental_reads_only_new_rows_with_the_boundary(
    hub: Hub, readings: MySQLDatabase, dataset: Callable[..., Manifest]
) -> None:
    dataset(time_zone="Asia/Shanghai")
    add(readings, 1, 10, hour=8)
    assert hub.ingest("air").rows_written == 10
    add(readings, 11, 2, hour=8)  # same watermark, arrived later
    add(readings, 13, 3, hour=9)
    run = hub.ingest("air")
    assert (run.status, run.rows_read, run.rows_written) == ("succeeded", 5, 5)
    assert [r["station_id"] for r in rows(hub)] == list(range(1, 16))
    assert hub.ingest("air").status == "unchanged"


def test_incremental_filter_runs_on_the_server(readings: MySQLDatabase) -> None:
    c = MySQLConnector({"dsn": readings.dsn, "table": "readings"})
    sql = c._duck_sql("measured_at", "2024-06-01T08:00:00")
    assert "mysql_query" in sql and "`measured_at` >= ''2024-06-01 08:00:00''" in sql
    add(readings, 1, 4, hour=7)
    add(readings, 5, 2, hour=9)
    with c:
        got = [b.num_rows for b in c.read("measured_at", "2024-06-01T08:00:00")]
    assert sum(got) == 2


def test_merge_by_key(hub: Hub, readings: MySQLDatabase, dataset: Callable[..., Manifest]):
    dataset(mode="merge")
    add(readings, 1, 5, hour=8)
    hub.ingest("air")
    readings.execute(
        "UPDATE readings SET pm25 = 80.25, measured_at = '2024-06-01 10:00:00' "
        "WHERE station_id IN (2, 4)"
    )
    run = hub.ingest("air")
    assert (run.status, run.rows_read) == ("succeeded", 2)
    got = rows(hub)
    assert len(got) == 5
    assert [r["pm25"] for r in got] == [Decimal("35.50"), Decimal("80.25")] * 2 + [Decimal("35.50")]


def test_select_query_source(hub: Hub, readings: MySQLDatabase, dataset: Callable[..., Manifest]):
    add(readings, 1, 6, hour=8)
    m = dataset(query="SELECT * FROM readings WHERE station_id % 2 = 0", table=None)
    assert m.source.options["query"]
    run = hub.ingest("air")
    assert (run.status, run.rows_written) == ("succeeded", 3), run.error


def test_bad_credentials_fail_the_run_with_the_reason(
    hub: Hub, readings: MySQLDatabase, make_manifest: Callable[..., Manifest]
) -> None:
    user = readings.name + "_u"
    readings.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY 'right-pw'")
    readings.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY 'right-pw'")
    try:
        profile = mysql_profile(
            hub, "gy_12345", readings.name, user=user, password="wrong-pw", name="air_wrong"
        )
        m = make_manifest(
            id="air",
            columns=COLUMNS,
            primary_key=["station_id"],
            block_keys=[],
            source={"connector": "mysql", "profile": profile, "options": {"table": "readings"}},
        )
        hub.store.register_dataset(m)
        run = hub.ingest("air")
        assert run.status == "failed"
        assert run.error and "cannot connect" in run.error and "Access denied" in run.error
        assert "wrong-pw" not in run.error
        assert hub.store.versions("air") == []
    finally:
        readings.execute(f"DROP USER '{user}'@'%%'")
        readings.execute(f"DROP USER '{user}'@'localhost'")
