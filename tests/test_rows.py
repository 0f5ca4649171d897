"""The rows endpoint: filters, sorting, cursor pages, versions, formats — and its errors."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pyarrow.ipc as ipc
import pytest
from fastapi.testclient import TestClient

from hub.api.app import create_app
from tests.conftest import ExchangeWorld


@pytest.fixture(scope="module")
def client(exchange_world: ExchangeWorld) -> Iterator[TestClient]:
    with TestClient(create_app(exchange_world.hub.settings, hub=exchange_world.hub)) as c:
        yield c


def get(client: TestClient, world: ExchangeWorld, who: str, ds: str, **params: Any) -> Any:
    return client.get(
        f"/v1/datasets/{ds}/rows",
        headers={"Authorization": f"Bearer {world.tokens[who]}"},
        params=params,
    )


def all_pages(client: TestClient, world: ExchangeWorld, who: str, ds: str, **params: Any) -> list:
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        body = get(client, world, who, ds, **params, **({"cursor": cursor} if cursor else {}))
        assert body.status_code == 200, body.text
        rows += body.json()["rows"]
        cursor = body.json()["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize(
    "sort", [None, "ticket_id", "-ticket_id", "status,-created_at", "-district_code", "category"]
)
def test_pages_cover_every_row_once_in_order(
    client: TestClient, exchange_world: ExchangeWorld, sort: str | None
) -> None:
    params = {"limit": 37, **({"sort": sort} if sort else {})}
    rows = all_pages(client, exchange_world, "steward", "t_open", **params)
    ids = [r["ticket_id"] for r in rows]
    assert sorted(ids) == list(range(1, 301))
    expected = sorted(
        exchange_world.table.to_pylist(),
        key=lambda r: r["ticket_id"],
    )
    for part in reversed((sort or "ticket_id").split(",")):
        col = part.lstrip("-")
        expected.sort(key=lambda r, c=col: r[c], reverse=part.startswith("-"))
    assert ids == [r["ticket_id"] for r in expected]


def test_filters(client: TestClient, exchange_world: ExchangeWorld) -> None:
    raw = exchange_world.table.to_pylist()
    body = get(
        client,
        exchange_world,
        "stranger",
        "t_open",
        filter=["district_code:in:520102,520103", "ticket_id:gt:100", "ticket_id:lte:250"],
        limit=1000,
    ).json()
    want = {
        r["ticket_id"]
        for r in raw
        if r["district_code"] in ("520102", "520103") and 100 < r["ticket_id"] <= 250
    }
    assert {r["ticket_id"] for r in body["rows"]} == want
    assert body["next_cursor"] is None
    one = get(client, exchange_world, "stranger", "t_open", filter="ticket_id:eq:7").json()
    assert [r["ticket_id"] for r in one["rows"]] == [7]
    assert one["rows"][0]["caller_phone"].count("*") == 4


def test_grant_rows_and_masked_pk_fallback(
    client: TestClient, exchange_world: ExchangeWorld
) -> None:
    rows = all_pages(client, exchange_world, "developer", "t_cond", limit=20)
    assert {r["district_code"] for r in rows} <= {"520102", "520103"}
    assert len({r["ticket_id"] for r in rows}) == len(rows)
    assert set(rows[0]) == {"ticket_id", "district_code", "status", "caller_name", "caller_phone"}


def test_columns_versions_and_formats(client: TestClient, exchange_world: ExchangeWorld) -> None:
    r = get(
        client,
        exchange_world,
        "stranger",
        "t_open",
        columns="ticket_id,status",
        sort="-ticket_id",
        limit=5,
        version=1,
        format="arrow",
    )
    assert r.status_code == 200
    t = ipc.open_stream(io.BytesIO(r.content)).read_all()
    assert t.column_names == ["ticket_id", "status"]
    assert t.column("ticket_id").to_pylist() == [300, 299, 298, 297, 296]
    assert r.headers["x-blockhub-versions"] == "t_open=1"
    cursor = r.headers["x-blockhub-next-cursor"]
    nxt = get(client, exchange_world, "stranger", "t_open", columns="ticket_id,status",
              sort="-ticket_id", limit=5, cursor=cursor)  # fmt: skip
    assert [x["ticket_id"] for x in nxt.json()["rows"]] == [295, 294, 293, 292, 291]


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"filter": "nope:eq:1"}, 400, "filter"),
        ({"filter": "ticket_id:like:1"}, 400, "filter"),
        ({"sort": "caller_idx"}, 400, "sort"),
        ({"columns": "content"}, 400, None),
        ({"cursor": "garbage!"}, 400, "cursor"),
        ({"limit": 0}, 422, None),
        ({"limit": 10001}, 422, None),
        ({"version": 9}, 404, None),
    ],
)
def test_bad_requests_name_the_field(
    client: TestClient,
    exchange_world: ExchangeWorld,
    params: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    who, ds = ("developer", "t_cond") if params.get("columns") else ("stranger", "t_open")
    r = get(client, exchange_world, who, ds, **params)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["ok"] is False
    if field:
        assert body["detail"]["field"] == field


def test_keyset_sql_follows_the_one_quoting_rule() -> None:
    """Cursor values meet the SQL as catalog/sqltext.py writes them: finite numbers bare,
    NaN and the infinities (a float column can hold them) cast from their text."""
    from hub.exchange.rows import SortKey, _after

    assert _after([SortKey("lat")], [26.5]) == '(("lat" > 26.5 OR "lat" IS NULL))'
    assert "CAST('nan' AS DOUBLE)" in _after([SortKey("x")], [float("nan")])
    assert "\"x\" < CAST('-inf' AS DOUBLE)" in _after([SortKey("x", desc=True)], [float("-inf")])
    assert _after([SortKey("n"), SortKey("s")], [3, "o'k"]) == (
        '(("n" > 3 OR "n" IS NULL)) OR '
        '("n" IS NOT DISTINCT FROM 3 AND ("s" > \'o\'\'k\' OR "s" IS NULL))'
    )
