"""A reader's SQL runs in a room that holds nothing it may not read (docs/security.md, SQL).

Three agencies read one owner's datasets: an unconditional one, a conditional one (one
agency holds a grant for some columns and one district, the phone masked) and one shared
with no one.  Every value is tagged with its dataset and district, so a forbidden row or
an unmasked phone is recognisable wherever it turns up.  Generated queries are run twice
per reader: through the exchange (checked), and straight in the reader's room with the
check skipped — as if the check had a bug.  Neither way returns a forbidden value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.datasets.manifest import parse_manifest
from catalog.errors import HubError
from catalog.identity.store import Principal
from hub.assembly.context import Hub
from hub.exchange.engine import Exchange
from hub.settings import Settings
from tests.conftest import file_source, manifest_dict

OWNER = Principal("owner", "gy_12345", "owner", "steward")
GRANTEE = Principal("dev", "gy_hbj", "dev", "developer")
STRANGER = Principal("stranger", "gy_jyj", "stranger", "developer")
ADMIN = Principal("admin", "gy_dsj", "admin", "admin")
DISTRICTS = ("520102", "520103")
ROWS = 40

COLUMNS = [
    {"name": "ticket_id", "type": "int64"},
    {"name": "district_code", "type": "string"},
    {"name": "tag", "type": "string"},
    {"name": "caller_phone", "type": "string", "pii": "phone"},
    {"name": "updated_at", "type": "timestamptz"},
]
SHARING = {
    "open_ds": {"type": "unconditional"},
    "cond_ds": {"type": "conditional"},
    "none_ds": {"type": "none", "legal_basis": "《数据安全法》第二十一条"},
}


def phone(dataset: str, i: int) -> str:
    return f"139{list(SHARING).index(dataset)}{i:07d}"


def rows(dataset: str) -> pa.Table:
    tag = dataset.split("_")[0].upper()
    return pa.table(
        {
            "ticket_id": pa.array(range(ROWS), pa.int64()),
            "district_code": [DISTRICTS[i % 2] for i in range(ROWS)],
            "tag": [f"{tag}-{DISTRICTS[i % 2]}-{i}" for i in range(ROWS)],
            "caller_phone": [phone(dataset, i) for i in range(ROWS)],
            "updated_at": pa.array(
                [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(ROWS)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


RAW_PHONES = {phone(d, i) for d in SHARING for i in range(ROWS)}


@dataclass
class World:
    hub: Hub
    folder: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("rooms")
    hub = Hub.open(Settings(home=folder / "home"))
    for agency in ("gy_12345", "gy_hbj", "gy_jyj", "gy_dsj"):
        hub.store.identity.upsert_agency(agency, agency)
    for p in (OWNER, GRANTEE, STRANGER, ADMIN):
        hub.store.identity.create_principal(p.id, p.agency_id, p.name, p.role)
    for dataset, sharing in SHARING.items():
        data = folder / dataset / "rows.parquet"
        data.parent.mkdir()
        pq.write_table(rows(dataset), data)
        source = {**file_source(hub, data.parent, data.name), "cursor": "updated_at"}
        m = parse_manifest(
            manifest_dict(
                id=dataset, sharing=sharing, columns=COLUMNS, source=source, block_keys=[]
            )
        )
        hub.register(m, file=f"<{dataset}>")
        assert hub.ingest(dataset).status == "succeeded"
    record = hub.store.get_dataset("cond_ds")
    g = hub.grants.request(
        record,
        agency_id="gy_hbj",
        requested_by="dev",
        purpose="关联分析",
        columns=["ticket_id", "district_code", "tag", "caller_phone"],
        row_filter={"district_code": [DISTRICTS[0]]},
    )
    hub.grants.approve(g.id, by="owner", dataset=record)
    hub.exchange.small_rows = 10  # half the copies in memory, half as files: both kinds
    try:
        yield World(hub, folder)
    finally:
        hub.close()


def forbidden(who: Principal, value: str) -> bool:
    """Whether ``value`` is something ``who`` may not see."""
    if any(p in value for p in RAW_PHONES):
        return True  # no grant lifts the phone's mask
    if who is ADMIN:
        return False  # admins read every dataset, masked
    if "NONE-" in value:
        return True
    if who is GRANTEE:
        return f"COND-{DISTRICTS[1]}" in value  # outside the grant's row filter
    return "COND-" in value


def assert_clean(who: Principal, table: Any) -> None:
    for column in table.columns:
        for value in column.to_pylist():
            assert not forbidden(who, str(value)), (who.id, value)


@contextlib.contextmanager
def room_cursor(ex: Exchange, who: Principal) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor of ``who``'s room with every readable dataset named — and no check."""
    snap = ex._state()
    accesses = ex.accesses(who, snap)
    room = ex.rooms.hold(ex._room_key(who, snap))
    placed = {
        d: room.place(snap.latest[d], a, ex._loader) for d, a in accesses.items() if a.readable
    }
    cur = room.db.cursor()
    try:
        for d, obj in placed.items():
            cur.execute(f'CREATE TEMP VIEW "{d}" AS SELECT * FROM "{obj.name}"')
        yield cur
    finally:
        cur.close()
        for obj in placed.values():
            room.release(obj)
        ex.rooms.leave(room)


NAMES = st.sampled_from(["open_ds", "cond_ds", "none_ds", "c1", "OPEN_DS", '"Cond_DS"'])
COLS = st.sampled_from(["tag", "caller_phone", "district_code || tag", "tag || caller_phone"])
CTES = st.sampled_from(["c1", "cond_ds", "none_ds"])


def queries() -> st.SearchStrategy[str]:
    leaf = st.one_of(
        st.tuples(COLS, NAMES).map(lambda t: f"SELECT {t[0]} AS x FROM {t[1]}"),
        NAMES.map(lambda n: f"SELECT x FROM {n}"),  # a CTE's column
        NAMES.map(lambda n: f"SELECT string_agg(tag, ',') AS x FROM {n}"),
        NAMES.map(lambda n: f"SELECT max(caller_phone) AS x FROM {n} WHERE tag LIKE 'COND-5201%'"),
    )

    def extend(q: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(CTES, q, q).map(lambda t: f"WITH {t[0]} AS ({t[1]}) {t[2]}"),
            st.tuples(q, q).map(lambda t: f"{t[0]} UNION ALL {t[1]}"),
            q.map(lambda s: f"SELECT x FROM ({s}) AS sub"),
            st.tuples(q, q).map(lambda t: f"SELECT ({t[1]} LIMIT 1) AS x FROM ({t[0]}) AS a"),
            st.tuples(q, NAMES).map(
                lambda t: (
                    f"SELECT a.x FROM ({t[0]}) AS a WHERE EXISTS "
                    f"(SELECT 1 FROM {t[1]} AS b WHERE b.tag <> a.x)"
                )
            ),
        )

    return st.recursive(leaf, extend, max_leaves=4)


READERS = st.sampled_from([GRANTEE, STRANGER, ADMIN])
HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@HYPOTHESIS
@given(sql=queries(), who=READERS)
def test_no_forbidden_value_through_the_exchange(world: World, sql: str, who: Principal) -> None:
    try:
        table = world.hub.exchange.query(sql, who).to_table()
    except HubError:
        return
    assert_clean(who, table)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@HYPOTHESIS
@given(sql=queries(), who=READERS)
def test_no_forbidden_value_even_with_the_check_skipped(
    world: World, sql: str, who: Principal
) -> None:
    with room_cursor(world.hub.exchange, who) as cur:
        try:
            table = cur.execute(sql).to_arrow_table()
        except duckdb.Error:
            return
    assert_clean(who, table)


def _lake_files(world: World, dataset: str) -> list[Path]:
    return sorted((world.hub.settings.home / "lake").rglob(f"{dataset}/data/*.parquet"))


@pytest.mark.parametrize("who", [GRANTEE, STRANGER, ADMIN], ids=lambda p: p.id)
def test_a_room_holds_only_its_readers_view(world: World, who: Principal) -> None:
    """With the check skipped: the catalog, the files, the settings and Python's variables
    give nothing beyond the reader's own masked, filtered copies."""
    ex = world.hub.exchange
    cond_files = [str(p) for p in _lake_files(world, "cond_ds")]
    open_meta = ex._state().latest["open_ds"].metadata_location
    secret_frame = pa.table({"tag": [phone("none_ds", 1)]})  # noqa: F841 - a Python variable
    with room_cursor(ex, who) as cur:
        tables = cur.execute(
            "SELECT database_name, table_name FROM duckdb_tables() "
            "UNION ALL SELECT database_name, view_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
        relations = {f'"{db}".{t}' if db.endswith("$f") else f'"{t}"' for db, t in tables}
        datasets = {r.strip('"').split("@")[0] for r in relations}
        readable = {d for d, a in ex.accesses(who).items() if a.readable}
        assert datasets == readable  # its objects, their files and its temporary names only
        for relation in relations:
            assert_clean(who, cur.execute(f"SELECT * FROM {relation}").to_arrow_table())
        refused = [
            f"SELECT * FROM read_parquet({cond_files!r})",
            f"SELECT * FROM '{cond_files[0]}'",
            f"SELECT * FROM iceberg_scan('{open_meta}')",
            "SELECT * FROM secret_frame",
            "SET enable_external_access = true",
            "SET allowed_directories = ['/']",
            f"ATTACH '{world.hub.settings.home / 'catalog.db'}' AS c",
            "SELECT * FROM read_text('/etc/hostname')",
        ]
        for sql in refused:
            with pytest.raises(duckdb.Error):
                cur.execute(sql).fetchall()
        others = [
            p for p in ex.folder.rglob("*.duckdb") if not p.is_relative_to(cur_folder(ex, who))
        ]
        for path in others:
            with pytest.raises(duckdb.Error):
                cur.execute(f"SELECT * FROM read_duckdb('{path}', table_name='t')").fetchall()


def cur_folder(ex: Exchange, who: Principal) -> Path:
    return next(r.folder for r in ex.rooms.all() if r.key.agency == who.agency_id)


def test_the_owner_room_reads_its_agency_tables_and_no_others(world: World) -> None:
    ex = world.hub.exchange
    with room_cursor(ex, OWNER) as cur:
        own = _lake_files(world, "cond_ds")[0]
        assert cur.execute(f"SELECT count(*) FROM read_parquet('{own}')").fetchone() == (ROWS,)
        catalog = world.hub.settings.home / "catalog.db"
        with pytest.raises(duckdb.Error):
            cur.execute(f"SELECT * FROM read_text('{catalog}')").fetchall()


def test_a_revoked_grant_leaves_the_room(tmp_path: Path) -> None:
    hub = Hub.open(Settings(home=tmp_path / "home"))
    try:
        for agency in ("gy_12345", "gy_hbj"):
            hub.store.identity.upsert_agency(agency, agency)
        for p in (OWNER, GRANTEE):
            hub.store.identity.create_principal(p.id, p.agency_id, p.name, p.role)
        data = tmp_path / "src" / "rows.parquet"
        data.parent.mkdir()
        pq.write_table(rows("cond_ds"), data)
        source = {**file_source(hub, data.parent, data.name), "cursor": "updated_at"}
        m = parse_manifest(
            manifest_dict(
                id="cond_ds",
                sharing=SHARING["cond_ds"],
                columns=COLUMNS,
                source=source,
                block_keys=[],
            )
        )
        hub.register(m, file="<cond_ds>")
        assert hub.ingest("cond_ds").status == "succeeded"
        record = hub.store.get_dataset("cond_ds")
        g = hub.grants.request(
            record, agency_id="gy_hbj", requested_by="dev", purpose="p", unmask=["caller_phone"]
        )
        hub.grants.approve(g.id, by="owner", dataset=record)
        ex = hub.exchange
        unmasked = ex.query("SELECT caller_phone FROM cond_ds", GRANTEE).to_table()
        assert set(unmasked.column(0).to_pylist()) <= RAW_PHONES
        entry = hub.audit.entries(limit=1)[0]
        assert entry.detail["unmasked"] == {"cond_ds": ["caller_phone"]}  # on record
        hub.grants.revoke(g.id, by="owner", reason="purpose fulfilled")
        with pytest.raises(HubError):
            ex.query("SELECT caller_phone FROM cond_ds", GRANTEE).to_table()
        room = next(r for r in ex.rooms.all() if r.key.agency == "gy_hbj")
        assert room.objects() == []  # the unmasked copy is gone from the room
    finally:
        hub.close()


def test_the_audit_entry_names_the_columns_the_plan_reads(world: World) -> None:
    ex = world.hub.exchange
    cases = {
        "SELECT count(*) AS n FROM open_ds WHERE district_code = '520102'": ["district_code"],
        "SELECT * EXCLUDE (caller_phone, updated_at) FROM open_ds": [
            "ticket_id",
            "district_code",
            "tag",
        ],
        "SELECT tag FROM (SELECT * FROM open_ds) AS t": ["tag"],
        "SELECT COLUMNS('caller_.*') FROM open_ds": ["caller_phone"],
    }
    audit = world.hub.audit
    for sql, columns in cases.items():
        ex.query(sql, STRANGER).to_table()
        entry = audit.entries(limit=1)[0]
        assert {d: sorted(c) for d, c in entry.columns.items()} == {"open_ds": sorted(columns)}, sql
