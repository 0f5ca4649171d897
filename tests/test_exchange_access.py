"""Roles × sharing types × endpoints: every allow, every deny, and no masked value ever
leaving unmasked (SQL in every format, rows, samples, errors, websocket channels)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from catalog.access.masking import mask_value
from catalog.domain.identifiers import mask_id_number, mask_name, mask_phone
from catalog.errors import AccessDenied
from hub.api.app import create_app
from hub.api.ws import check_channel
from tests.conftest import GRANT_DISTRICTS, ExchangeWorld

PII = {"caller_name": "name", "caller_phone": "phone", "caller_id_number": "id_number",
       "address": "address"}  # fmt: skip
PEOPLE = ["admin", "steward", "operator", "developer", "stranger"]
DATASETS = ["t_open", "t_cond", "t_none", "t_core"]

# (principal, dataset) → None (denied) or the set of PII columns the reader sees masked.
EXPECTED: dict[tuple[str, str], set[str] | None] = {}
for _p in PEOPLE:
    for _d in DATASETS:
        if _p == "steward":
            EXPECTED[_p, _d] = set()  # the owning agency
        elif _p == "admin":
            EXPECTED[_p, _d] = set(PII)  # reads everything, personal data masked
        elif _d == "t_none" or (_d == "t_cond" and _p not in ("admin", "developer")):
            EXPECTED[_p, _d] = None
        elif _d == "t_cond" and _p == "developer":
            EXPECTED[_p, _d] = {"caller_phone"}  # granted columns; caller_name unmasked
        else:
            EXPECTED[_p, _d] = set(PII)
CASES = sorted(EXPECTED)


@pytest.fixture(scope="module")
def client(exchange_world: ExchangeWorld) -> Iterator[TestClient]:
    with TestClient(create_app(exchange_world.hub.settings, hub=exchange_world.hub)) as c:
        yield c


h = ExchangeWorld.auth


def decode(content: bytes, fmt: str) -> list[dict[str, object]]:
    if fmt == "json":
        return json.loads(content)["rows"]  # type: ignore[no-any-return]
    if fmt == "ndjson":
        return [json.loads(line) for line in content.splitlines() if line.strip()]
    if fmt == "csv":
        return pacsv.read_csv(
            io.BytesIO(content), convert_options=pacsv.ConvertOptions(strings_can_be_null=False,
            column_types={c: pa.string() for c in ("district_code", *PII)})
        ).to_pylist()  # fmt: skip
    if fmt == "arrow":
        return ipc.open_stream(content).read_all().to_pylist()  # type: ignore[no-any-return]
    return pq.read_table(io.BytesIO(content)).to_pylist()  # type: ignore[no-any-return]


def assert_rows_as_expected(
    world: ExchangeWorld, rows: list[dict[str, object]], masked: set[str], who: str, ds: str
) -> None:
    """Every PII value is exactly the Python mask of a raw value (or raw, when unmasked),
    and the raw text of a masked column appears nowhere in the answer."""
    assert rows, "expected rows"
    text = json.dumps(rows, ensure_ascii=False, default=str)
    for col, kind in PII.items():
        seen = [r[col] for r in rows if col in r and r[col] is not None]
        if col in masked:
            allowed = {mask_value(kind, v) for v in world.raw(col)}
            assert set(seen) <= allowed, (col, seen[:3])
            for v in world.raw(col):
                assert v not in text, f"raw {col} leaked to {who} from {ds}"
        else:
            assert set(seen) <= world.raw(col)
    if (who, ds) == ("developer", "t_cond"):
        assert {r["district_code"] for r in rows} <= set(GRANT_DISTRICTS)
        assert set(rows[0]) <= {"ticket_id", "district_code", "status", "caller_name",
                                "caller_phone"}  # fmt: skip


@pytest.mark.parametrize(("who", "ds"), CASES)
@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv", "arrow", "parquet"])
def test_sql_every_format(
    client: TestClient, exchange_world: ExchangeWorld, who: str, ds: str, fmt: str
) -> None:
    masked = EXPECTED[who, ds]
    r = client.post(
        "/v1/query",
        headers=h(exchange_world, who),
        json={"sql": f"SELECT * FROM {ds}", "format": fmt},
    )
    if masked is None:
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        return
    if ds == "t_core" and fmt in ("csv", "arrow", "parquet"):
        assert r.status_code == 403 and r.json()["detail"]["classification"] == "core"
        return
    assert r.status_code == 200, r.text
    assert_rows_as_expected(exchange_world, decode(r.content, fmt), masked, who, ds)


@pytest.mark.parametrize(("who", "ds"), CASES)
def test_rows_sample_describe_and_channels(
    client: TestClient, exchange_world: ExchangeWorld, who: str, ds: str
) -> None:
    masked = EXPECTED[who, ds]
    hdr = h(exchange_world, who)
    rows = client.get(f"/v1/datasets/{ds}/rows", headers=hdr, params={"limit": 500})
    sample = client.get(f"/v1/datasets/{ds}/sample", headers=hdr, params={"n": 50})
    describe = client.get(f"/v1/datasets/{ds}", headers=hdr)
    entry = client.get(f"/v1/catalog/{ds}", headers=hdr)
    assert entry.status_code == 200  # the directory is public
    principal = exchange_world.hub.store.identity.get_principal(who)
    if masked is None:
        for r in (rows, sample, describe):
            assert r.status_code == 403 and r.json()["code"] == "forbidden"
        assert entry.json()["access"]["readable"] is False
        with pytest.raises(AccessDenied):
            check_channel(exchange_world.hub, principal, f"dataset:{ds}")
        return
    check_channel(exchange_world.hub, principal, f"dataset:{ds}")
    assert describe.status_code == 200
    assert entry.json()["access"]["readable"] is True
    assert set(entry.json()["access"]["masked"]) == masked
    for r in (rows, sample):
        assert r.status_code == 200, r.text
        assert_rows_as_expected(exchange_world, r.json()["rows"], masked, who, ds)


@pytest.mark.parametrize(
    "sql",
    [
        # predicates, sorting, grouping and functions only ever see the masked value
        "SELECT caller_phone FROM t_cond WHERE caller_phone = '{phone}'",
        "SELECT count(*) AS n FROM t_cond WHERE caller_phone LIKE '{head}%{tail}'",
        "SELECT caller_phone, count(*) AS n FROM t_cond GROUP BY caller_phone ORDER BY 1",
        "SELECT substr(caller_phone, 4, 4) AS mid FROM t_cond",
        "SELECT max(caller_phone) AS m, min(caller_phone) AS n FROM t_cond",
        "SELECT CAST(caller_phone AS BIGINT) AS x FROM t_cond",
        "SELECT md5(caller_phone) = md5('{phone}') AS same FROM t_cond",
        "SELECT * FROM t_cond WHERE district_code NOT IN ('520102', '520103')",
        "SELECT caller_id_number FROM t_cond",
        "SELECT error(caller_phone) FROM t_cond",
        "SELECT current_query() AS q",
    ],
)
def test_masked_values_cannot_be_recovered(
    client: TestClient, exchange_world: ExchangeWorld, sql: str
) -> None:
    phone = next(
        r["caller_phone"]
        for r in exchange_world.table.to_pylist()
        if r["district_code"] in GRANT_DISTRICTS
    )
    text = sql.format(phone=phone, head=phone[:3], tail=phone[-4:])
    r = client.post("/v1/query", headers=h(exchange_world, "developer"), json={"sql": text})
    body = r.text
    for v in exchange_world.raw("caller_phone") | exchange_world.raw("caller_id_number"):
        assert v not in body
    assert "__bh_" not in body or "iceberg_scan" not in body
    if r.status_code == 200:
        rows = r.json()["rows"]
        if "WHERE caller_phone =" in text or "NOT IN" in text:
            assert rows == []
        if "md5" in text:
            assert not any(row["same"] for row in rows)
    else:
        assert r.json()["code"] in ("query_failed", "query_rejected")


def test_masks_match_the_python_reference(
    client: TestClient, exchange_world: ExchangeWorld
) -> None:
    rows = exchange_world.table.to_pylist()
    r = client.post(
        "/v1/query",
        headers=h(exchange_world, "stranger"),
        json={"sql": "SELECT ticket_id, caller_name, caller_phone, caller_id_number FROM t_open"},
    )
    got = {row["ticket_id"]: row for row in r.json()["rows"]}
    for raw in rows:
        m = got[raw["ticket_id"]]
        assert m["caller_phone"] == mask_phone(raw["caller_phone"])
        assert m["caller_id_number"] == mask_id_number(raw["caller_id_number"])
        assert m["caller_name"] == mask_name(raw["caller_name"])


def test_grant_lifecycle_changes_what_is_read(fresh_exchange_world: ExchangeWorld) -> None:
    """Revoking ends access at once; an expiry in the past is refused."""
    exchange_world = fresh_exchange_world
    client = TestClient(create_app(exchange_world.hub.settings, hub=exchange_world.hub))
    hdr = h(exchange_world, "developer")
    sql = {"sql": "SELECT count(*) AS n FROM t_cond"}
    assert client.post("/v1/query", headers=hdr, json=sql).status_code == 200
    steward = h(exchange_world, "steward")
    r = client.post(
        f"/v1/access-requests/{exchange_world.grant_id}/revoke",
        headers=steward,
        json={"reason": "项目结束"},
    )
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert client.post("/v1/query", headers=hdr, json=sql).status_code == 403
    # a new request with an expiry in the past is refused; one that lapses reads as expired
    r = client.post(
        "/v1/datasets/t_cond/access-requests",
        headers=hdr,
        json={"purpose": "x", "expires_at": "2020-01-01T00:00:00Z"},
    )
    assert r.status_code == 400 and r.json()["detail"]["field"] == "expires_at"


def test_core_results_are_capped_and_derived_results_inherit_core(
    client: TestClient, exchange_world: ExchangeWorld
) -> None:
    """A JSON answer of core data stops at core_max_rows; joining a core dataset makes the
    result core (就高从严), so it cannot be exported either."""
    settings = exchange_world.hub.settings
    before = settings.core_max_rows
    settings.core_max_rows = 7
    try:
        hdr = h(exchange_world, "stranger")
        r = client.post("/v1/query", headers=hdr, json={"sql": "SELECT ticket_id FROM t_core"})
        body = r.json()
        assert body["row_count"] == 7 and body["truncated"] is True
        assert body["classification"] == "core"
        joined = "SELECT o.ticket_id FROM t_open o JOIN t_core c USING (ticket_id)"
        r = client.post("/v1/query", headers=hdr, json={"sql": joined, "format": "parquet"})
        assert r.status_code == 403 and r.json()["detail"]["classification"] == "core"
        r = client.post("/v1/query", headers=hdr, json={"sql": "SELECT 1 AS x FROM t_open"})
        assert r.headers["x-blockhub-classification"] == "general"
    finally:
        settings.core_max_rows = before
