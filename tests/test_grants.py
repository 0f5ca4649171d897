"""Access requests and grants: deadlines, narrowing, refusal, expiry, who may decide —
and the pure access decision behind them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from catalog.access.effective import decide
from catalog.access.grants import Grant
from catalog.identity.store import Principal
from tests.conftest import ExchangeWorld, SetClock


def _grant(**kw: object) -> Grant:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    base: dict[str, object] = dict(
        id="g", dataset_id="t_cond", agency_id="gy_hbj", requested_by="developer",
        purpose="p", columns=None, row_filter=None, unmask=(), expires_at=None,
        status="approved", requested_at=now, due_at=now,
    )  # fmt: skip
    base.update(kw)
    return Grant(**base)  # type: ignore[arg-type]


def test_decide_combines_grants(exchange_world: ExchangeWorld) -> None:
    d = exchange_world.hub.store.get_dataset("t_cond")
    dev = Principal("developer", "gy_hbj", "d", "developer")
    now = datetime(2026, 3, 4, 2, tzinfo=UTC)
    assert not decide(dev, d, [], now).readable
    a = decide(
        dev,
        d,
        [
            _grant(columns=("ticket_id", "caller_phone"), row_filter={"district_code": ("1",)}),
            _grant(id="h", columns=("status",), row_filter={"status": ("x",)},
                   unmask=("caller_phone",)),
            _grant(id="old", expires_at=now - timedelta(seconds=1)),  # expired: no effect
            _grant(id="other", agency_id="gy_jyj"),  # another agency's grant
        ],
        now,
    )  # fmt: skip
    assert a.readable and a.via == "grant" and set(a.grants) == {"g", "h"}
    assert a.columns == ("ticket_id", "status", "caller_phone")
    assert dict(a.masked) == {}
    assert a.row_filters == ({"district_code": ("1",)}, {"status": ("x",)})


@pytest.fixture
def world(fresh_exchange_world: ExchangeWorld) -> ExchangeWorld:
    return fresh_exchange_world


@pytest.fixture
def client(fresh_client: TestClient) -> TestClient:
    return fresh_client


h = ExchangeWorld.auth


def test_request_approve_narrowed_then_read(client: TestClient, world: ExchangeWorld) -> None:
    stranger, steward = h(world, "stranger"), h(world, "steward")
    assert client.post("/v1/query", headers=stranger,
                       json={"sql": "SELECT 1 FROM t_cond"}).status_code == 403  # fmt: skip
    r = client.post(
        "/v1/datasets/t_cond/access-requests",
        headers=stranger,
        json={
            "purpose": "学校周边噪音投诉统计",
            "columns": ["ticket_id", "district_code", "category", "caller_phone"],
            "row_filter": {"district_code": ["520102", "520111"]},
            "unmask": ["caller_phone"],
        },
    )
    assert r.status_code == 201, r.text
    req = r.json()
    assert req["status"] == "pending" and not req["overdue"]
    assert datetime.fromisoformat(req["due_at"]) - datetime.fromisoformat(req["requested_at"]) >= (
        timedelta(days=14)
    )
    mine = client.get("/v1/access-requests", headers=stranger).json()
    assert [x["id"] for x in mine] == [req["id"]]
    pending = client.get("/v1/access-requests", headers=steward,
                         params={"status": "pending"}).json()  # fmt: skip
    assert req["id"] in [x["id"] for x in pending]
    # only the owner's steward decides; an approval may not widen
    for who in ("stranger", "developer", "operator"):
        r = client.post(f"/v1/access-requests/{req['id']}/approve", headers=h(world, who), json={})
        assert r.status_code == 403
    r = client.post(f"/v1/access-requests/{req['id']}/approve", headers=steward,
                    json={"columns": ["ticket_id", "status"]})  # fmt: skip
    assert r.status_code == 400 and r.json()["detail"]["field"] == "columns"
    r = client.post(
        f"/v1/access-requests/{req['id']}/approve",
        headers=steward,
        json={"columns": ["ticket_id", "district_code"], "unmask": [],
              "row_filter": {"district_code": ["520102"]}},
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "approved"
    rows = client.post("/v1/query", headers=stranger,
                       json={"sql": "SELECT * FROM t_cond"}).json()["rows"]  # fmt: skip
    assert rows and {tuple(x) for x in rows} == {("ticket_id", "district_code")}
    assert {x["district_code"] for x in rows} == {"520102"}
    again = client.post(f"/v1/access-requests/{req['id']}/refuse", headers=steward,
                        json={"reason": "x"})  # fmt: skip
    assert again.status_code == 409


def test_refuse_needs_a_reason_and_none_is_never_requested(
    client: TestClient, world: ExchangeWorld
) -> None:
    stranger, steward = h(world, "stranger"), h(world, "steward")
    r = client.post("/v1/datasets/t_none/access-requests", headers=stranger,
                    json={"purpose": "x"})  # fmt: skip
    assert r.status_code == 403 and "个人信息保护法" in r.json()["error"]
    r = client.post("/v1/datasets/t_cond/access-requests", headers=stranger,
                    json={"purpose": "x", "columns": ["no_such"]})  # fmt: skip
    assert r.status_code == 400 and r.json()["detail"]["field"] == "columns"
    r = client.post("/v1/datasets/t_cond/access-requests", headers=h(world, "operator"),
                    json={"purpose": "x"})  # fmt: skip
    assert r.status_code == 403
    req = client.post("/v1/datasets/t_cond/access-requests", headers=stranger,
                      json={"purpose": "x"}).json()  # fmt: skip
    r = client.post(f"/v1/access-requests/{req['id']}/refuse", headers=steward,
                    json={"reason": ""})  # fmt: skip
    assert r.status_code == 422
    r = client.post(f"/v1/access-requests/{req['id']}/refuse", headers=steward,
                    json={"reason": "目的与数据无关"})  # fmt: skip
    assert r.json()["status"] == "refused" and r.json()["reason"] == "目的与数据无关"
    assert client.post("/v1/query", headers=stranger,
                       json={"sql": "SELECT 1 FROM t_cond"}).status_code == 403  # fmt: skip


def test_overdue_and_expiry(client: TestClient, world: ExchangeWorld, clock: SetClock) -> None:
    """On the hub's clock: overdue after the deadline, expired (and unreadable) after the
    expiry — the API's status and the exchange's decision read the same clock."""
    store = world.hub.grants
    d = world.hub.store.get_dataset("t_cond")
    long_ago = clock.now() - timedelta(days=30)
    late = store.request(d, agency_id="gy_jyj", requested_by="stranger", purpose="p",
                         now=long_ago)  # fmt: skip
    body = client.get("/v1/access-requests", headers=h(world, "steward"),
                      params={"overdue": True}).json()  # fmt: skip
    assert [x["id"] for x in body] == [late.id]
    ends = clock.now() + timedelta(days=90)
    store.approve(late.id, by="steward", dataset=d, expires_at=ends)
    stranger = h(world, "stranger")
    sql = {"sql": "SELECT count(*) AS n FROM t_cond"}
    assert client.post("/v1/query", headers=stranger, json=sql).status_code == 200
    clock.set(ends + timedelta(seconds=1))
    assert client.post("/v1/query", headers=stranger, json=sql).status_code == 403
    assert client.get(f"/v1/access-requests/{late.id}", headers=stranger).json()["status"] == (
        "expired"
    )
