"""Backup and restore of a production stack (hub/cli/backup.py, docs/operations.md "Back up"
and "Restore"): the catalog and the Iceberg catalog in one PostgreSQL database, the event
log in another, the lake on disk — backed up with `blockhub backup`, restored with
`blockhub restore` into new empty databases after the lake was lost."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hub.assembly.context import Hub
from hub.settings import Settings
from tests.conftest import blockhub_cli, fresh_pg_database, publish_file, ticket_rows

KEY = "b" * 40


def _env(home: Path, catalog: str, events: str, lake: Path) -> dict[str, str]:
    return {
        "BLOCKHUB_HOME": str(home),
        "BLOCKHUB_CATALOG_URL": catalog,
        "BLOCKHUB_LAKE_CATALOG_URL": catalog,
        "BLOCKHUB_EVENTS_URL": events,
        "BLOCKHUB_WAREHOUSE": lake.as_uri(),
        "BLOCKHUB_AUDIT_KEY": KEY,
    }


def _settings(env: dict[str, str]) -> Settings:
    return Settings(
        home=Path(env["BLOCKHUB_HOME"]),
        catalog_url=env["BLOCKHUB_CATALOG_URL"],
        lake_catalog_url=env["BLOCKHUB_LAKE_CATALOG_URL"],
        events_url=env["BLOCKHUB_EVENTS_URL"],
        warehouse=env["BLOCKHUB_WAREHOUSE"],
        audit_key=KEY,
    )


def _state(h: Hub) -> dict[str, object]:
    """What a restore must give back: versions, rows at each version, who may sign in."""
    versions = [(v.version, v.snapshot_id, v.total_rows) for v in h.store.versions("tickets")]
    table = h.lake.table("tickets")
    rows = {
        v: table.scan(snapshot_id=snap).to_arrow().sort_by("ticket_id").to_pylist()
        for v, snap, _ in versions
    }
    return {"versions": versions, "rows": rows, "datasets": [d.id for d in h.store.list_datasets()]}


def test_backup_then_restore_into_an_empty_stack(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    exports = tmp_path / "exports"
    exports.mkdir()
    pq.write_table(ticket_rows(1, 50), exports / "tickets-1.parquet")
    with (
        fresh_pg_database() as catalog,
        fresh_pg_database() as events,
        fresh_pg_database() as catalog2,
        fresh_pg_database() as events2,
    ):
        env = _env(tmp_path / "home", catalog, events, lake)
        h = Hub.open(_settings(env))
        try:
            h.store.identity.upsert_agency("gy_12345", "贵阳市12345政务服务便民热线")
            h.store.identity.create_principal("wangmin", "gy_12345", "王敏", "steward")
            token = h.store.identity.issue_token("wangmin", ttl=timedelta(days=1))
            publish_file(h, exports / "tickets-1.parquet", "tickets")
            more: pa.Table = ticket_rows(51, 30)
            pq.write_table(more, exports / "tickets-2.parquet")
            assert h.ingest("tickets").version == 2
            before = _state(h)
            anchor = h.audit.anchor()
        finally:
            h.close()

        taken = blockhub_cli("backup", str(tmp_path / "backup"), **env)
        assert taken.returncode == 0, taken.stderr
        assert {p.name for p in (tmp_path / "backup").iterdir()} == {
            "backup.json",
            "catalog.pgdump",
            "events.pgdump",
            "lake",
        }

        # The disaster: the lake's disk is gone; the databases are new and empty.
        shutil.move(lake, tmp_path / "lake.lost")
        env2 = _env(tmp_path / "home2", catalog2, events2, lake)
        restored = blockhub_cli("restore", str(tmp_path / "backup"), **env2)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "audit chain verifies" in " ".join(restored.stdout.split())

        h = Hub.open(_settings(env2))
        try:
            assert _state(h) == before
            after = h.audit.verify([anchor])  # every entry up to the anchor, unchanged
            assert after.ok, after.problem
            assert h.store.identity.authenticate(token).id == "wangmin"
        finally:
            h.close()

        # A restore goes into an empty stack only: a second one is refused, nothing written.
        again = blockhub_cli("restore", str(tmp_path / "backup"), **env2)
        assert again.returncode == 2
        assert "is not empty" in " ".join(again.stderr.split())
        assert "Traceback" not in again.stderr


def test_the_embedded_stack_backs_up_and_restores_in_place(tmp_path: Path) -> None:
    """The embedded layout (SQLite files, the Iceberg catalog's file inside the lake
    folder): the databases are dumped, not copied with the lake; the home is lost and
    restored where it was; the check finds every version and row again."""
    from hub.cli.backup import backup, check, restore

    home = tmp_path / "home"
    exports = tmp_path / "exports"
    exports.mkdir()
    pq.write_table(ticket_rows(1, 40), exports / "tickets-1.parquet")
    s = Settings(home=home)
    h = Hub.open(s)
    try:
        h.store.identity.upsert_agency("gy_12345", "贵阳市12345政务服务便民热线")
        publish_file(h, exports / "tickets-1.parquet", "tickets")
        before = _state(h)
    finally:
        h.close()
    m = backup(s, tmp_path / "backup")
    assert sorted(d["file"] for d in m["databases"]) == [
        "catalog.db",
        "events.db",
        "lake-catalog.db",
    ]
    assert not list((tmp_path / "backup" / "lake").glob("iceberg.db*"))
    shutil.move(home, tmp_path / "home.lost")
    assert check(s, restore(s, tmp_path / "backup")) == []
    h = Hub.open(s)
    try:
        assert _state(h) == before
    finally:
        h.close()
