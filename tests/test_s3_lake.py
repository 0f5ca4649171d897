"""The lake on S3 (moto's server mode speaks the protocol here): ingest, time travel,
deletes, quarantine, the exchange's reads, replicas and exports — end to end, and the
room sandbox's walls on S3 exactly as on local disk (docs/operations.md "Lake on S3")."""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.testclient import TestClient

from catalog.datasets.manifest import parse_manifest
from catalog.errors import ConfigError, HubError
from catalog.identity.store import Principal
from hub.api.app import create_app
from hub.assembly.context import Hub
from hub.settings import Settings
from pipelines.quarantine import discard, quarantine_rows, release
from tests.conftest import (
    S3_KEY_ID,
    S3Bucket,
    SetClock,
    _agencies,
    file_source,
    manifest_dict,
    ticket_rows,
)
from tests.quality_data import BAD, DUPLICATE, bad_tickets

DEMO = Path(__file__).resolve().parents[1] / "hub" / "demo" / "world" / "hotline_tickets.yaml"
OWNER = Principal("steward", "gy_12345", "steward", "steward")
READER = Principal("developer", "gy_hbj", "developer", "developer")
ADMIN = Principal("admin", "gy_dsj", "admin", "admin")


@pytest.fixture
def s3_hub(tmp_path: Path, s3_bucket: S3Bucket, clock: SetClock) -> Iterator[Hub]:
    h = _agencies(Hub.open(s3_bucket.settings(tmp_path / "home"), clock=clock))
    for p in (OWNER, READER, ADMIN):
        h.store.identity.create_principal(p.id, p.agency_id, p.name, p.role)
    try:
        yield h
    finally:
        h.close()


def _tickets(hub: Hub, src: Path, ident: str = "tickets", **overrides: Any) -> None:
    source = {**file_source(hub, src, "*.parquet"), "cursor": "updated_at"}
    m = parse_manifest(manifest_dict(id=ident, source=source, **overrides))
    hub.register(m, file=f"<{ident}>")


def _count(hub: Hub, sql: str, who: Principal = OWNER, **kw: Any) -> int:
    return int(hub.exchange.query(sql, who, **kw).to_table().column(0)[0].as_py())


# -- settings --------------------------------------------------------------------------


def test_an_s3_warehouse_is_configured_in_one_place_and_the_secret_never_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = {"home": tmp_path, "warehouse": "s3://lake-bucket/prefix"}
    with pytest.raises(ConfigError) as e:
        Settings(**base).s3_lake()
    assert e.value.detail["setting"] == "BLOCKHUB_S3_SECRET_ACCESS_KEY"
    with pytest.raises(ConfigError) as e:
        Settings(**base, s3_endpoint="minio:9000").s3_lake()
    assert e.value.detail["setting"] == "BLOCKHUB_S3_ENDPOINT"
    with pytest.raises(ConfigError) as e:
        Settings(home=tmp_path, warehouse="s3:///prefix").s3_lake()
    assert e.value.detail["setting"] == "BLOCKHUB_WAREHOUSE"
    # From the environment, the secret from a file (Docker and Kubernetes secrets).
    secret_file = tmp_path / "s3-secret"
    secret_file.write_text("very-secret-value-123\n")
    monkeypatch.setenv("BLOCKHUB_WAREHOUSE", "s3://lake-bucket/prefix")
    monkeypatch.setenv("BLOCKHUB_S3_ENDPOINT", "http://minio:9000")
    monkeypatch.setenv("BLOCKHUB_S3_REGION", "cn-southwest-1")
    monkeypatch.setenv("BLOCKHUB_S3_ACCESS_KEY_ID", "hub")
    monkeypatch.setenv("BLOCKHUB_S3_SECRET_ACCESS_KEY_FILE", str(secret_file))
    settings = Settings(home=tmp_path)
    s3 = settings.s3_lake()
    assert s3 is not None
    assert (s3.endpoint, s3.region, s3.access_key_id, s3.path_style) == (
        "http://minio:9000",
        "cn-southwest-1",
        "hub",
        True,
    )
    assert s3.secret_access_key == "very-secret-value-123"
    props = s3.iceberg_properties()
    assert props["s3.endpoint"] == "http://minio:9000"
    assert props["s3.force-virtual-addressing"] == "false"
    fs = s3.filesystem()
    assert fs.region == "cn-southwest-1"
    for shown in (repr(settings), str(settings), repr(s3), str(settings.model_dump())):
        assert "very-secret-value-123" not in shown
    # Both the value and the file: refused, naming the variable, never the value.
    monkeypatch.setenv("BLOCKHUB_S3_SECRET_ACCESS_KEY", "very-secret-value-123")
    with pytest.raises(ConfigError) as e:
        Settings(home=tmp_path).s3_lake()
    assert e.value.detail["setting"] == "BLOCKHUB_S3_SECRET_ACCESS_KEY_FILE"
    assert "very-secret-value-123" not in str(e.value)


def test_the_lake_catalog_for_other_engines_names_the_s3_endpoint_not_the_keys(
    tmp_path: Path,
) -> None:
    """``blockhub lake catalog`` on an S3 lake: what a reader needs to reach the objects
    (endpoint, region, addressing) is in the file, the key pair is not (docs/operations.md,
    "Other engines"; tests/test_e2e_production.py reads through it with Ray)."""
    from hub.cli.engines import lake_catalog

    settings = Settings(
        home=tmp_path,
        warehouse="s3://lake-bucket/prefix",
        s3_endpoint="http://minio:9000",
        s3_region="cn-southwest-1",
        s3_access_key_id="hub-key-id",
        s3_secret_access_key="very-secret-value-123",
    )
    cat = lake_catalog(settings)
    props = cat.pyiceberg_properties()  # an in-process reader: everything it needs
    assert props["s3.endpoint"] == "http://minio:9000"
    assert props["s3.secret-access-key"] == "very-secret-value-123"
    written = yaml.safe_load(cat.pyiceberg_yaml())["catalog"]["blockhub"]
    assert written["warehouse"] == "s3://lake-bucket/prefix"
    assert (written["s3.endpoint"], written["s3.region"]) == ("http://minio:9000", "cn-southwest-1")
    assert written["s3.force-virtual-addressing"] == "false"
    text = cat.pyiceberg_yaml()
    assert "very-secret-value-123" not in text and "hub-key-id" not in text


def test_a_hub_refuses_to_start_on_an_s3_warehouse_without_credentials(
    tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    settings = Settings(home=tmp_path / "home", warehouse=s3_bucket.warehouse)
    with pytest.raises(ConfigError):
        Hub.open(settings)
    assert not (tmp_path / "home" / "catalog.db").exists()  # nothing half-made


# -- the data path ---------------------------------------------------------------------


def test_ingest_time_travel_and_reads_on_s3(
    tmp_path: Path, s3_hub: Hub, s3_bucket: S3Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(ticket_rows(1, 50), src / "a.parquet")
    _tickets(s3_hub, src)
    assert s3_hub.ingest("tickets").status == "succeeded"
    pq.write_table(ticket_rows(51, 30), src / "b.parquet")  # incremental: only new rows
    run = s3_hub.ingest("tickets")
    assert run.status == "succeeded" and run.rows_written == 30
    assert s3_hub.ingest("tickets").status == "unchanged"

    # Everything of the table is in the bucket under the warehouse prefix, nothing local.
    keys = s3_bucket.objects()
    assert keys and all(k.startswith("lake/blockhub/tickets/") for k in keys)
    assert sum("/data/" in k for k in keys) == 2
    assert any(k.endswith(".metadata.json") for k in keys)
    assert not list((s3_hub.settings.home / "lake").rglob("*.parquet"))
    versions = s3_hub.store.versions("tickets")
    assert [v.metadata_location.startswith(s3_bucket.warehouse) for v in versions] == [True, True]

    # The exchange: the owner's room reads the lake; another agency reads a copy made
    # for its profile by the loader (which reads S3); time travel to version 1.
    assert _count(s3_hub, "SELECT count(*) FROM tickets") == 80
    assert _count(s3_hub, "SELECT count(*) FROM tickets", versions={"tickets": 1}) == 50
    assert _count(s3_hub, "SELECT count(*) FROM tickets", READER) == 80
    assert _count(s3_hub, "SELECT count(*) FROM tickets", READER, versions={"tickets": 1}) == 50
    masked = s3_hub.exchange.query("SELECT DISTINCT caller_phone FROM tickets", READER).to_table()
    assert masked.column(0).to_pylist() == ["138****5678"]
    # No room reads S3 itself: the owner's room too holds copies the loader made.
    owner_room = next(r for r in s3_hub.exchange.rooms.all() if r.key.agency == "gy_12345")
    assert owner_room.key.lake_dirs == ()
    assert {o.source for o in owner_room.objects()} == {"copy"}

    # The secret reached no log record (pyiceberg, pyarrow, DuckDB, ours).
    assert s3_bucket.secret not in caplog.text
    assert caplog.records  # and there were records to look at


def test_merge_deletes_on_s3(tmp_path: Path, s3_hub: Hub, s3_bucket: S3Bucket) -> None:
    """merge: a changed row replaces the stored one (pyiceberg's copy-on-write delete of
    an S3 data file, then the new rows), in one snapshot."""
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(ticket_rows(1, 20), src / "a.parquet")
    source = {**file_source(s3_hub, src, "*.parquet"), "cursor": "updated_at", "mode": "merge"}
    m = parse_manifest(manifest_dict(id="tickets", source=source, primary_key=["ticket_id"]))
    s3_hub.register(m, file="<tickets>")
    assert s3_hub.ingest("tickets").status == "succeeded"
    changed = ticket_rows(5, 3).set_column(
        2, "category", pa.array(["道路破损"] * 3)
    )  # ids 5..7 again, later updated_at
    changed = changed.set_column(
        5,
        "updated_at",
        pa.array([1_800_000_000_000_000 + i for i in range(3)], pa.timestamp("us", tz="UTC")),
    )
    pq.write_table(changed, src / "b.parquet")
    assert s3_hub.ingest("tickets").status == "succeeded"
    t = s3_hub.exchange.query(
        "SELECT category, count(*) AS n FROM tickets GROUP BY 1 ORDER BY 1", OWNER
    ).to_table()
    assert t.to_pylist() == [{"category": "噪音扰民", "n": 17}, {"category": "道路破损", "n": 3}]
    assert _count(s3_hub, "SELECT count(*) FROM tickets", versions={"tickets": 1}) == 20
    assert s3_hub.lake.current("tickets").total_rows == 20  # type: ignore[union-attr]


def test_drop_rows_quarantine_release_and_discard_on_s3(
    tmp_path: Path, s3_hub: Hub, s3_bucket: S3Bucket
) -> None:
    """The quality gate reads the staged S3 files with DuckDB (httpfs), quarantine files
    are written to S3, position-delete files too (D31); release and discard work there."""
    src = tmp_path / "src"
    src.mkdir()
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    data["source"] = {**file_source(s3_hub, src, "*.parquet"), "cursor": "ticket_id"}
    data["quality"] = {"policy": "drop-rows"}
    manifest = parse_manifest(data, file="hotline.yaml")
    s3_hub.register(manifest, file="hotline.yaml")
    n = 600
    table, expected = bad_tickets(n)
    pq.write_table(table, src / "a.parquet")
    run = s3_hub.ingest("hotline_tickets")
    assert run.status == "succeeded", run.error
    bad = len(BAD) + len(DUPLICATE)
    assert _count(s3_hub, "SELECT count(*) FROM hotline_tickets", ADMIN) == n - bad
    files = s3_hub.lake.table("hotline_tickets").inspect.files().to_pylist()
    assert sorted((f["content"], f["record_count"]) for f in files) == [(0, n), (1, bad)]
    assert all(f["file_path"].startswith("s3://") for f in files)

    quality = s3_hub.store.quality
    [batch] = quality.batches("hotline_tickets")
    assert batch.path.startswith(f"{s3_bucket.warehouse}/blockhub/hotline_tickets/quarantine/")
    assert batch.path.removeprefix(f"s3://{s3_bucket.bucket}/") in s3_bucket.objects()
    access = s3_hub.exchange.access(ADMIN, "hotline_tickets")
    rows = quarantine_rows(batch, access, limit=100, lake=s3_hub.lake)
    assert {r["ticket_id"] for r in rows} == set(expected)

    # Released with force: every held row published in a new version, read from S3.
    out = release(
        batch.id,
        manifest,
        store=s3_hub.store,
        lake=s3_hub.lake,
        publisher=None,
        principal="steward",
        force=True,
    )
    assert out.rows_published == bad and out.version == 2
    assert _count(s3_hub, "SELECT count(*) FROM hotline_tickets", ADMIN) == n

    # A second bad batch, discarded: its object leaves the bucket.
    more, _ = bad_tickets(n, first_id=10_000)
    pq.write_table(more, src / "b.parquet")
    assert s3_hub.ingest("hotline_tickets").status == "succeeded"
    held = [b for b in quality.batches("hotline_tickets") if b.status == "held"]
    assert len(held) == 1
    key = held[0].path.removeprefix(f"s3://{s3_bucket.bucket}/")
    assert key in s3_bucket.objects()
    discard(held[0].id, manifest, store=s3_hub.store, principal="steward", lake=s3_hub.lake)
    assert key not in s3_bucket.objects()


def test_replicas_and_exports_on_s3(tmp_path: Path, s3_hub: Hub, s3_bucket: S3Bucket) -> None:
    """The latest large version is served from a replica built from S3 (D24); exports
    in every bulk format come out of the room as on local disk."""
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(ticket_rows(1, 400), src / "a.parquet")
    _tickets(s3_hub, src)
    assert s3_hub.ingest("tickets").status == "succeeded"
    ex = s3_hub.exchange
    ex.small_rows = 100  # 400 rows: a large version, a replica
    ex.warm()
    deadline = time.monotonic() + 60
    while not ex.warm_done():
        assert time.monotonic() < deadline, "the replica was not built"
        time.sleep(0.05)
    assert ex.replicas is not None and list(ex.replicas.ready()) == ["tickets"]
    assert _count(s3_hub, "SELECT count(*) FROM tickets") == 400
    room = next(r for r in ex.rooms.all() if r.key.agency == "gy_12345")
    assert [o.source for o in room.objects()] == ["replica"]

    token = s3_hub.store.identity.issue_token(READER.id)
    hdr = {"Authorization": f"Bearer {token}"}
    sql = "SELECT ticket_id, caller_phone FROM tickets ORDER BY ticket_id"
    with TestClient(create_app(s3_hub.settings, hub=s3_hub)) as client:
        r = client.post("/v1/query", headers=hdr, json={"sql": sql, "format": "parquet"})
        assert r.status_code == 200, r.text
        got = pq.read_table(io.BytesIO(r.content))
        assert got.num_rows == 400 and set(got.column("caller_phone").to_pylist()) == {
            "138****5678"
        }
        r = client.post("/v1/query", headers=hdr, json={"sql": sql, "format": "csv"})
        assert r.status_code == 200 and r.text.count("\n") == 401
        r = client.get(
            "/v1/datasets/tickets/rows", headers=hdr, params={"format": "arrow", "limit": 400}
        )
        assert r.status_code == 200, r.text
        assert pa.ipc.open_stream(r.content).read_all().num_rows == 400


# -- the sandbox on S3 -----------------------------------------------------------------


@pytest.fixture
def two_owners(tmp_path: Path, s3_hub: Hub, s3_bucket: S3Bucket) -> Hub:
    """Two agencies' datasets in one bucket, and an object beside the warehouse."""
    for ident, agency in (("tickets", "gy_12345"), ("air", "gy_hbj")):
        src = tmp_path / ident
        src.mkdir()
        pq.write_table(ticket_rows(1, 30), src / "a.parquet")
        source = {**file_source(s3_hub, src, "*.parquet", agency=agency), "cursor": "updated_at"}
        m = parse_manifest(
            manifest_dict(id=ident, agency=agency, source=source, sharing={"type": "conditional"})
        )
        s3_hub.register(m, file=f"<{ident}>")
        assert s3_hub.ingest(ident).status == "succeeded"
    buf = io.BytesIO()
    pq.write_table(pa.table({"secret": ["outside-the-lake"]}), buf)
    s3_bucket.client().put_object(
        Bucket=s3_bucket.bucket, Key="other/secret.parquet", Body=buf.getvalue()
    )
    return s3_hub


def _room_cursor(hub: Hub, who: Principal) -> duckdb.DuckDBPyConnection:
    """A cursor in ``who``'s room with nothing of the SQL check in the way."""
    ex = hub.exchange
    assert ex.query("SELECT count(*) FROM tickets", who).to_table().num_rows == 1
    snap = ex._state()
    room = ex.rooms.hold(ex._room_key(who, snap))
    ex.rooms.leave(room)
    return room.db.cursor()


STRANGER = Principal("stranger", "gy_jyj", "stranger", "developer")


@pytest.mark.parametrize("who", [OWNER, READER, STRANGER, ADMIN], ids=lambda p: p.id)
def test_no_room_reaches_the_s3_lake(two_owners: Hub, s3_bucket: S3Bucket, who: Principal) -> None:
    """With the check skipped, in every reader's room — the owner's included: no
    credential, no httpfs, no S3 folder allowed; an attempt to add any of them is
    refused, and one that DuckDB accepts (a secret) reaches nothing."""
    hub = two_owners
    if who is STRANGER:
        hub.store.identity.upsert_agency("gy_jyj", "贵阳市教育局")
        hub.store.identity.create_principal(who.id, who.agency_id, who.name, who.role)
    if who in (READER, STRANGER):
        grant_all(hub, "tickets", who)
    wh = s3_bucket.warehouse
    own = [f"s3://{s3_bucket.bucket}/{k}" for k in s3_bucket.objects("lake/blockhub/tickets/data/")]
    air = [f"s3://{s3_bucket.bucket}/{k}" for k in s3_bucket.objects("lake/blockhub/air/data/")]
    air_meta = hub.store.latest_versions()["air"].metadata_location
    cur = _room_cursor(hub, who)
    try:
        refused = [
            f"SELECT * FROM read_parquet('{own[0]}')",  # even the owner's own table
            f"SELECT * FROM read_parquet('{air[0]}')",
            f"SELECT * FROM iceberg_scan('{air_meta}')",
            f"SELECT * FROM read_parquet('s3://{s3_bucket.bucket}/other/secret.parquet')",
            f"SELECT * FROM read_parquet('{wh}/blockhub/tickets/../air/data/x.parquet')",
            f"SELECT * FROM glob('{wh}/**')",
            f"SELECT * FROM read_text('{s3_bucket.endpoint}/{s3_bucket.bucket}/other/x.parquet')",
            "SELECT * FROM read_text('http://169.254.169.254/latest/meta-data/')",
            f"COPY (SELECT 1) TO '{wh}/blockhub/tickets/data/evil.parquet'",
            "LOAD httpfs",
            "INSTALL httpfs",
            "SET enable_external_access = true",
            f"SET allowed_directories = ['s3://{s3_bucket.bucket}/']",
            f"ATTACH '{wh}/blockhub/air/metadata/x.duckdb' AS x",
        ]
        for sql in refused:
            with pytest.raises(duckdb.Error):
                cur.execute(sql).fetchall()
        # DuckDB lets a session create a secret, but without httpfs nothing uses it.
        with contextlib.suppress(duckdb.Error):
            cur.execute(
                f"CREATE SECRET mine (TYPE s3, KEY_ID '{S3_KEY_ID}', SECRET '{s3_bucket.secret}', "
                f"ENDPOINT '{s3_bucket.endpoint.split('://')[1]}', URL_STYLE 'path', "
                "USE_SSL false)"
            )
        with pytest.raises(duckdb.Error):
            cur.execute(f"SELECT * FROM read_parquet('{own[0]}')").fetchall()
    finally:
        cur.close()
    assert not any("evil" in k for k in s3_bucket.objects())


def grant_all(hub: Hub, dataset: str, who: Principal) -> None:
    record = hub.store.get_dataset(dataset)
    g = hub.grants.request(record, agency_id=who.agency_id, requested_by=who.id, purpose="p")
    hub.grants.approve(g.id, by="steward", dataset=record)


def test_the_loader_reads_the_warehouse_prefix_only(two_owners: Hub, s3_bucket: S3Bucket) -> None:
    """The exchange's loader (which never runs a caller's SQL) holds one secret, scoped
    to the warehouse prefix, and its sandbox allows that prefix and its own folder."""
    ex = two_owners.exchange
    inside = f"{s3_bucket.warehouse}/blockhub/tickets/data/x.parquet"
    outside = f"s3://{s3_bucket.bucket}/other/secret.parquet"
    which = "SELECT name FROM which_secret(?, 's3')"
    assert ex._db.execute(which, [inside]).fetchall() != []
    assert ex._db.execute(which, [outside]).fetchall() == []
    with pytest.raises(duckdb.Error):
        ex._db.execute(
            f"SELECT * FROM read_parquet('s3://{s3_bucket.bucket}/other/secret.parquet')"
        ).fetchall()
    # And through the exchange, with the check: a path is never a name.
    own = [f"s3://{s3_bucket.bucket}/{k}" for k in s3_bucket.objects("lake/blockhub/tickets/data/")]
    for sql in (
        f"SELECT * FROM read_parquet('{own[0]}')",
        f"SELECT * FROM '{own[0]}'",
        f"SELECT * FROM iceberg_scan('{s3_bucket.warehouse}/blockhub/tickets')",
    ):
        with pytest.raises(HubError):
            ex.query(sql, OWNER).to_table()


def test_the_key_id_is_the_configured_one(s3_hub: Hub) -> None:
    """pyiceberg's FileIO gets the lake's settings, not pyarrow's or boto's defaults."""
    io_props = s3_hub.lake.catalog.properties
    assert io_props["s3.access-key-id"] == S3_KEY_ID
    assert io_props["s3.endpoint"] == s3_hub.settings.s3_endpoint


def test_a_killed_runs_staged_objects_are_swept_on_s3(
    tmp_path: Path, s3_hub: Hub, s3_bucket: S3Bucket
) -> None:
    """Files staged by a run that never committed are orphans in the bucket; the sweep
    removes them and nothing a snapshot references (docs/operations.md "Failures")."""
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(ticket_rows(1, 20), src / "a.parquet")
    _tickets(s3_hub, src)
    assert s3_hub.ingest("tickets").status == "succeeded"
    committed = s3_bucket.objects("lake/blockhub/tickets/data/")
    schema = s3_hub.lake.table("tickets").schema().as_arrow()
    staged = s3_hub.lake.stage("tickets", "killed-run", ticket_rows(100, 5).to_batches(), schema)
    assert [f.path.startswith("s3://") for f in staged] == [True]
    assert len(s3_bucket.objects("lake/blockhub/tickets/data/")) == len(committed) + 1
    removed = s3_hub.lake.remove_orphans("tickets", older_than_s=0)
    assert len(removed) == 1 and "killed-run" in removed[0]
    assert s3_bucket.objects("lake/blockhub/tickets/data/") == committed
    assert _count(s3_hub, "SELECT count(*) FROM tickets") == 20


def test_pipeline_steps_hand_over_through_s3(
    tmp_path: Path, s3_hub: Hub, s3_bucket: S3Bucket
) -> None:
    """The Airflow steps on an S3 lake: the gate runs in another process with another
    home, configured by environment variables only (the secret from a file), and finds
    the staged batch through the bucket — what a worker on another machine does."""
    import json
    import os
    import subprocess
    import sys

    from pipelines.steps import extract_step, publish_step

    src = tmp_path / "src"
    src.mkdir()
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    data["source"] = {**file_source(s3_hub, src, "*.parquet"), "cursor": "ticket_id"}
    data["quality"] = {"policy": "drop-rows"}
    s3_hub.register(parse_manifest(data, file="hotline.yaml"), file="hotline.yaml")
    table, expected = bad_tickets(300)
    pq.write_table(table, src / "a.parquet")
    settings = s3_hub.settings
    ref = extract_step("hotline_tickets", origin="dag/run-1", settings=settings)
    staged = [k for k in s3_bucket.objects("lake/blockhub/hotline_tickets/data/")]
    assert staged  # the batch is in the bucket, nowhere else

    secret = tmp_path / "secrets" / "s3_secret_key"
    secret.parent.mkdir()
    secret.write_text(s3_bucket.secret + "\n")
    home = settings.home
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BLOCKHUB_")},
        "BLOCKHUB_HOME": str(tmp_path / "worker-home"),
        "BLOCKHUB_CATALOG_URL": f"sqlite:///{home / 'catalog.db'}",
        "BLOCKHUB_LAKE_CATALOG_URL": f"sqlite:///{home / 'lake' / 'iceberg.db'}",
        "BLOCKHUB_EVENTS_URL": f"sqlite:///{home / 'events.db'}",
        "BLOCKHUB_WAREHOUSE": s3_bucket.warehouse,
        "BLOCKHUB_S3_ENDPOINT": s3_bucket.endpoint,
        "BLOCKHUB_S3_ACCESS_KEY_ID": S3_KEY_ID,
        "BLOCKHUB_S3_SECRET_ACCESS_KEY_FILE": str(secret),
    }
    code = (
        "import json, sys\n"
        "from pipelines.steps import validate_step\n"
        "print(json.dumps(validate_step(json.loads(sys.argv[1]))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(ref)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert s3_bucket.secret not in done.stdout + done.stderr
    gated = json.loads(done.stdout.strip().splitlines()[-1])
    assert not (tmp_path / "worker-home" / "lake" / "blockhub").exists()
    bad_rows = len(expected) + 1  # both copies of the duplicated ticket id
    published = publish_step(gated, settings=settings)
    assert published["version"] == 1
    assert _count(s3_hub, "SELECT count(*) FROM hotline_tickets", ADMIN) == 300 - bad_rows
