"""Dispatch over a real uvicorn: channels and permissions, feed filters, alerts, orders,
presence, connection limits, heartbeats."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from catalog.datasets.manifest import Manifest
from hub.assembly.context import Hub
from hub.settings import Settings
from tests.wsclient import WS

RULES = """
rules:
  - id: aqi_high
    kind: threshold
    channel: feed:air_readings
    field: aqi
    op: ">"
    value: 200
    key: [station_id]
    severity: high
    title: "AQI {aqi} at station {station_id}"
  - id: ticket_surge
    kind: window
    channel: feed:hotline_feed
    key: [district_code, category]
    window_s: 600
    more_than: 3
  - id: air_stale
    kind: staleness
    channel: feed:quiet_feed
    max_age_s: 0.5
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    return Settings(
        home=tmp_path / "home",
        bus_poll_s=0.05,
        alert_rules=rules,
        ops_tick_s=0.2,
        ws_heartbeat_s=0.5,
        ws_max_per_principal=3,
    )


FEED_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "air_readings": [("station_id", "string"), ("district_code", "string"), ("aqi", "int64")],
    "hotline_feed": [("district_code", "string"), ("category", "string"), ("seq", "int64")],
    "quiet_feed": [("level", "int64")],
    "secret_feed": [("level", "int64")],
}


@pytest.fixture
def feeds(hub: Hub, make_feed: Callable[..., Manifest]) -> None:
    """Push feeds of gy_hbj, declaring the fields their events carry."""
    for fid, cols in FEED_COLUMNS.items():
        extra: dict[str, Any] = {}
        if fid == "secret_feed":
            extra["sharing"] = {"type": "none", "legal_basis": "《环境监测数据管理办法》"}
        hub.store.register_dataset(make_feed(fid, dict(cols), agency="gy_hbj", **extra))


def feed_event(hub: Hub, feed: str, data: dict[str, Any]) -> None:
    """What the feed intake publishes for each live event."""
    hub.bus.publish(f"feed:{feed}", "feed.event", data, {"agency": "gy_hbj", "feed": feed})


def aqi_events(ws: WS, n: int) -> list[dict[str, Any]]:
    """The next n messages about the aqi_high rule (the staleness rule fires meanwhile)."""
    out: list[dict[str, Any]] = []
    while len(out) < n:
        m = ws.messages(1)[0]
        if m["data"].get("rule_id") == "aqi_high":
            out.append(m)
    return out


def api(live: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://{live}", headers={"Authorization": f"Bearer {token}"})


def test_channel_permissions(live: str, hub: Hub, tokens: dict[str, str], feeds: None) -> None:
    dev = WS(live, tokens["developer"])  # gy_hbj developer
    assert dev.subscribe("feed:secret_feed")["type"] == "subscribed"  # its own agency
    assert dev.subscribe("alerts")["code"] == "forbidden"
    assert dev.subscribe("presence")["code"] == "forbidden"
    assert dev.subscribe("orders:gy_hbj")["type"] == "subscribed"
    assert dev.subscribe("orders:developer")["type"] == "subscribed"
    assert dev.subscribe("orders:gy_dsj")["code"] == "forbidden"
    assert dev.subscribe("nope:x")["code"] == "invalid_request"
    steward = WS(live, tokens["steward"])  # another agency
    assert steward.subscribe("feed:secret_feed")["code"] == "forbidden"
    assert steward.subscribe("feed:missing")["code"] == "dataset_not_found"
    op = WS(live, tokens["operator"])
    for ch in ("alerts", "presence", "orders:gy_hbj", "feed:air_readings"):
        assert op.subscribe(ch)["type"] == "subscribed", ch
    bad = op.subscribe("dataset:air_readings", filter={"x": ["1"]})
    assert bad["code"] == "invalid_request" and "feed" in bad["error"]
    for c in (dev, steward, op):
        c.close()
    # On record, let in or refused; a feed's entries name the feed and its owner, so the
    # owner's steward sees who subscribed to it (and who tried).
    seen = [
        (e.principal, e.detail["channel"], e.outcome, list(e.datasets))
        for e in hub.audit.entries(action="subscribe", limit=50)
    ]
    assert ("developer", "feed:secret_feed", "ok", ["secret_feed"]) in seen
    assert ("steward", "feed:secret_feed", "denied", ["secret_feed"]) in seen
    assert ("developer", "orders:gy_dsj", "denied", []) in seen
    assert ("operator", "feed:air_readings", "ok", ["air_readings"]) in seen
    owner_view = hub.audit.entries(agency_data="gy_hbj", dataset="secret_feed", action="subscribe")
    assert {e.principal for e in owner_view} == {"developer", "steward"}


def test_feed_filter_is_applied_per_subscription(
    live: str, hub: Hub, tokens: dict[str, str], feeds: None
) -> None:
    one = WS(live, tokens["operator"])
    one.subscribe("feed:air_readings", filter={"district_code": ["520102"]})
    every = WS(live, tokens["operator"])
    every.subscribe("feed:air_readings")
    for i, d in enumerate(["520102", "520103", "520102", "520111"]):
        feed_event(hub, "air_readings", {"station_id": f"s{i}", "district_code": d, "aqi": 50})
    got = one.messages(2)
    assert [m["data"]["station_id"] for m in got] == ["s0", "s2"]
    assert [m["offset"] for m in got] == [1, 3]
    m = got[0]
    assert m["channel"] == "feed:air_readings" and m["event"] == "feed.event"
    assert m["epoch"] == hub.log.epoch and m["ts"]
    assert m["source"] == {"agency": "gy_hbj", "feed": "air_readings"}
    assert [m["offset"] for m in every.messages(4)] == [1, 2, 3, 4]
    # replay with the filter skips the same events
    again = WS(live, tokens["operator"])
    again.subscribe("feed:air_readings", since=0, filter={"district_code": "520102"})
    assert [m["offset"] for m in again.messages(2)] == [1, 3]
    for c in (one, every, again):
        c.close()


def test_threshold_alert_reaches_operator_and_lifecycle(
    live: str, hub: Hub, tokens: dict[str, str], feeds: None
) -> None:
    op = WS(live, tokens["operator"])
    op.subscribe("alerts")
    feed_event(hub, "air_readings", {"station_id": "s1", "district_code": "520102", "aqi": 120})
    for aqi in (230, 260):  # two crossings at one station: one alert
        feed_event(hub, "air_readings", {"station_id": "s1", "district_code": "520102", "aqi": aqi})
    (opened,) = aqi_events(op, 1)
    assert opened["event"] == "alert.opened"
    alert = opened["data"]
    assert alert["rule_id"] == "aqi_high" and alert["key"] == "station_id=s1"
    assert alert["title"] == "AQI 230 at station s1" and alert["status"] == "open"
    assert opened["source"]["channel"] == "feed:air_readings" and opened["source"]["offset"] == 2
    with api(live, tokens["operator"]) as c:
        deadline = time.monotonic() + 5
        while c.get(f"/v1/alerts/{alert['id']}").json()["count"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        open_now = c.get("/v1/alerts", params={"status": "open"}).json()["alerts"]
        # (the staleness rule may have opened its own alert meanwhile)
        assert [a["id"] for a in open_now if a["rule_id"] == "aqi_high"] == [alert["id"]]
        r = c.post(f"/v1/alerts/{alert['id']}/ack", json={"note": "checking"})
        assert r.status_code == 200 and r.json()["acked_by"] == "operator"
        assert c.post(f"/v1/alerts/{alert['id']}/ack").json()["code"] == "conflict"
    assert aqi_events(op, 1)[0]["event"] == "alert.acknowledged"
    op.send({"op": "alert.resolve", "alert": alert["id"], "note": "sensor fixed", "id": 1})
    ok = op.reply()
    assert ok["type"] == "ok" and ok["alert"]["resolved_by"] == "operator"
    assert aqi_events(op, 1)[0]["event"] == "alert.resolved"
    with api(live, tokens["developer"]) as c:
        assert c.get("/v1/alerts").status_code == 403
    # resolved: the next crossing opens a new alert
    feed_event(hub, "air_readings", {"station_id": "s1", "district_code": "520102", "aqi": 300})
    new = aqi_events(op, 1)[0]
    assert new["event"] == "alert.opened" and new["data"]["id"] != alert["id"]
    op.close()


def test_window_and_staleness_rules(
    live: str, hub: Hub, tokens: dict[str, str], feeds: None
) -> None:
    op = WS(live, tokens["operator"])
    op.subscribe("alerts")
    for i in range(4):
        feed_event(hub, "hotline_feed", {"district_code": "520102", "category": "noise", "seq": i})
        feed_event(hub, "hotline_feed", {"district_code": "520103", "category": "noise", "seq": i})
    feed_event(hub, "hotline_feed", {"district_code": "520102", "category": "water"})
    seen = {}
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        m = op.messages(1)[0]
        seen[(m["data"]["rule_id"], m["data"]["key"])] = m["data"]
    surge = seen[("ticket_surge", "district_code=520102|category=noise")]
    assert surge["detail"]["count"] == 4
    assert ("ticket_surge", "district_code=520103|category=noise") in seen
    stale = seen[("air_stale", "feed:quiet_feed")]  # no event at all within 0.5 s
    assert stale["status"] == "open"
    feed_event(hub, "quiet_feed", {"level": 1})
    resolved = op.messages(1)[0]
    assert resolved["event"] == "alert.resolved" and resolved["data"]["resolved_by"] == "system"
    op.close()


def test_order_full_life(live: str, hub: Hub, tokens: dict[str, str]) -> None:
    hub.store.identity.create_principal("unit7", "gy_hbj", "环境监察七中队", "developer")
    unit_token = hub.store.identity.issue_token("unit7")
    unit = WS(live, unit_token)
    unit.subscribe("orders:unit7")
    desk = WS(live, tokens["developer"])  # the unit's agency desk
    desk.subscribe("orders:gy_hbj")
    with api(live, tokens["operator"]) as c:
        r = c.post(
            "/v1/orders",
            json={
                "target": "unit7",
                "instructions": "到观山湖区监测站核查AQI异常",
                "priority": "high",
                "event": {"channel": "feed:air_readings", "offset": 2},
                "deadline": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            },
        )
        assert r.status_code == 201, r.text
        order = r.json()
        assert (
            c.post("/v1/orders", json={"target": "nobody", "instructions": "x"}).json()["code"]
            == "invalid_request"
        )
    with api(live, tokens["steward"]) as c:  # not an operator
        assert (
            c.post("/v1/orders", json={"target": "unit7", "instructions": "x"}).status_code == 403
        )
        assert c.get(f"/v1/orders/{order['id']}").status_code == 404  # not its order
    got = unit.messages(1)[0]
    assert got["event"] == "order.opened" and got["data"]["order"]["id"] == order["id"]
    assert desk.messages(1)[0]["event"] == "order.opened"
    unit.send({"op": "order.ack", "order": order["id"], "id": "a1"})
    assert unit.reply()["order"]["status"] == "acknowledged"
    unit.send(
        {"op": "order.progress", "order": order["id"], "note": "到达现场", "data": {"lat": 26.6}}
    )
    assert unit.reply()["order"]["status"] == "in_progress"
    unit.send({"op": "order.ack", "order": order["id"]})
    assert unit.reply()["code"] == "conflict"
    with api(live, unit_token) as c:
        r = c.post(f"/v1/orders/{order['id']}/close", json={"note": "传感器故障，已更换"})
        assert r.status_code == 200 and r.json()["status"] == "closed"
        assert [o["id"] for o in c.get("/v1/orders").json()["orders"]] == [order["id"]]
        assert c.post(f"/v1/orders/{order['id']}/progress").status_code == 409
    events = [m["event"] for m in unit.messages(3)]
    assert events == ["order.acknowledged", "order.progress", "order.closed"]
    with api(live, tokens["operator"]) as c:
        full = c.get(f"/v1/orders/{order['id']}").json()
    hist = full["history"]
    assert [(h["action"], h["actor"], h["status"]) for h in hist] == [
        ("open", "operator", "open"),
        ("acknowledge", "unit7", "acknowledged"),
        ("progress", "unit7", "in_progress"),
        ("close", "unit7", "closed"),
    ]
    assert hist[2]["note"] == "到达现场" and hist[2]["data"] == {"lat": 26.6}
    # Every change is also in the hash-chained audit log, oldest first here.
    with api(live, tokens["admin"]) as c:
        audited = c.get("/v1/audit", params={"action": "order.*"}).json()
        assert c.get("/v1/audit/verify").json()["ok"]
    mine = [e for e in reversed(audited) if e["detail"]["order"] == order["id"]]
    assert [(e["action"], e["principal"], e["detail"]["status"]) for e in mine] == [
        ("order.open", "operator", "open"),
        ("order.acknowledge", "unit7", "acknowledged"),
        ("order.progress", "unit7", "in_progress"),
        ("order.close", "unit7", "closed"),
    ]
    assert (
        mine[0]["detail"]["target"] == "unit7" and mine[3]["detail"]["note"] == "传感器故障，已更换"
    )
    assert mine[1]["agency"] == "gy_hbj"
    unit.close()
    desk.close()


def test_unacknowledged_order_escalates(live: str, hub: Hub, tokens: dict[str, str]) -> None:
    op = WS(live, tokens["operator"])
    op.subscribe("alerts")
    with api(live, tokens["operator"]) as c:
        past = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
        order = c.post(
            "/v1/orders", json={"target": "gy_hbj", "instructions": "x", "deadline": past}
        ).json()
        esc = op.messages(1)[0]
        while esc["event"] != "order.escalated":  # skip the staleness rule's alert
            esc = op.messages(1)[0]
        assert esc["event"] == "order.escalated" and esc["data"]["order"]["id"] == order["id"]
        hist = c.get(f"/v1/orders/{order['id']}").json()["history"]
        assert [h["action"] for h in hist] == ["open", "escalate"]
        time.sleep(0.5)  # escalated once only
        assert len(c.get(f"/v1/orders/{order['id']}").json()["history"]) == 2
    with api(live, tokens["admin"]) as c:
        esc_audit = c.get("/v1/audit", params={"action": "order.escalate"}).json()
    assert [(e["principal"], e["agency"]) for e in esc_audit] == [("system", "")]
    op.close()


def test_presence_limits_and_heartbeat(live: str, tokens: dict[str, str]) -> None:
    op = WS(live, tokens["operator"])
    assert op.welcome["heartbeat_s"] == 0.5
    op.subscribe("presence")
    dev = WS(live, tokens["developer"])
    joined = op.messages(1)[0]
    assert joined["event"] == "presence.joined" and joined["data"]["principal"] == "developer"
    with api(live, tokens["operator"]) as c:
        assert c.get("/v1/presence").json()["principals"] == ["developer", "operator"]
        assert c.get("/v1/presence", headers={"Authorization": "Bearer x"}).status_code == 401
    dev.close()
    left = op.messages(1)[0]
    assert left["event"] == "presence.left" and left["data"]["principal"] == "developer"
    # heartbeats arrive on a quiet connection
    frame = json_frame(op, "heartbeat")
    assert frame["ts"]
    # at most 3 connections per principal: the 4th is refused with 4029
    more = [WS(live, tokens["developer"]) for _ in range(3)]
    with pytest.raises(AssertionError, match="too_many_connections"):
        WS(live, tokens["developer"])
    refused = connect(f"ws://{live}/v1/ws", additional_headers=bearer(tokens["developer"]))
    assert json.loads(refused.recv(5))["code"] == "too_many_connections"
    with pytest.raises(ConnectionClosed) as exc:
        refused.recv(5)
    assert exc.value.rcvd is not None and exc.value.rcvd.code == 4029
    for c in (*more, op):
        c.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def json_frame(ws: WS, type_: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f: dict[str, Any] = json.loads(ws.conn.recv(timeout))
        if f["type"] == type_:
            return f
    raise AssertionError(f"no {type_} frame")


@pytest.fixture(params=[False, True], ids=["shared-frames", "deflate"])
def deflate(request: pytest.FixtureRequest, settings: Settings) -> bool:
    """Serve with permessage-deflate off (the default) or on (BLOCKHUB_WS_DEFLATE)."""
    settings.ws_deflate = request.param
    return bool(request.param)


def test_feed_payloads_are_masked_per_subscriber(
    deflate: bool,
    live: str,
    hub: Hub,
    tokens: dict[str, str],
    make_manifest: Callable[..., Manifest],
) -> None:
    hub.store.register_dataset(
        make_manifest(
            id="patrol_feed",
            agency="gy_hbj",
            source={"connector": "push", "options": {}},
            columns=[
                {"name": "district_code", "type": "string"},
                {"name": "reporter_phone", "type": "string", "pii": "phone"},
            ],
            primary_key=[],
            block_keys=[],
        )
    )
    owner = WS(live, tokens["developer"])  # gy_hbj: the feed's own agency
    other = WS(live, tokens["operator"])  # gy_dsj: reads the unconditional feed, masked
    for ws in (owner, other):
        # The client asks for compression, as browsers do; the hub accepts when configured.
        assert bool(ws.conn.protocol.extensions) is deflate
        assert ws.subscribe("feed:patrol_feed")["type"] == "subscribed"
    feed_event(hub, "patrol_feed", {"district_code": "520102", "reporter_phone": "13812345678"})
    assert owner.messages(1)[0]["data"]["reporter_phone"] == "13812345678"
    assert other.messages(1)[0]["data"] == {
        "district_code": "520102",
        "reporter_phone": "138****5678",
    }
    owner.close()
    other.close()


def test_a_backlogs_mask_answers_are_computed_once_per_principal_and_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backlog is written connection by connection: each connection's pass over the
    same messages must reuse the answers, not recompute them for every connection."""
    from catalog.identity.store import Principal
    from eventlog.message import Message
    from hub.api import ws

    calls: list[tuple[str, int]] = []

    def counting(hub: Any, principal: Principal, msg: Message) -> Any:
        data = msg.data
        calls.append((principal.id, data["i"]))
        return data if principal.role == "operator" else {**data, "phone": "138****5678"}

    monkeypatch.setattr(ws, "disclose_message", counting)
    cache = ws._SameMessage()
    now = datetime.now(tz=UTC)
    backlog = [Message(i, "feed:f", i, "e", now, "feed.event", {"i": i}) for i in range(1, 4)]
    op = Principal("op", "gy_dsj", "op", "operator")
    dev = Principal("dev", "gy_12345", "dev", "developer")
    for _connection in range(100):
        for who in (op, dev):
            assert [cache.unmasked(None, who, m) for m in backlog] == [who is op] * 3  # type: ignore[arg-type]
    assert sorted(calls) == sorted((p, i) for p in ("op", "dev") for i in (1, 2, 3))
    later = Message(4, "feed:f", 4, "e", now, "feed.event", {"i": 4})  # a new message: asked again
    assert cache.unmasked(None, op, later) is True  # type: ignore[arg-type]
    assert calls[-1] == ("op", 4)


def test_an_expired_access_answer_is_served_while_a_thread_reads_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fan-out asks for a principal's access from the event loop: past its time the
    old answer is returned at once and the grants are read again in a worker thread;
    past the grace too, they are read before answering (a revoked grant still ends)."""
    from catalog.identity.store import Principal
    from hub.live import channels

    reads: list[str] = []

    class Record:
        manifest = SimpleNamespace(block_keys=())  # the one attribute the view reads

    class Exchange:
        def record_access(self, principal: Principal, dataset: str) -> tuple[Record, str]:
            time.sleep(0.3)  # a catalog read that takes a while
            reads.append(dataset)
            return Record(), f"answer {len(reads)}"

    class FakeHub:
        exchange = Exchange()

    hub, op = FakeHub(), Principal("op", "gy_dsj", "op", "operator")
    assert channels.source_access(hub, op, "aq", fresh=True) == "answer 1"  # type: ignore[arg-type,comparison-overlap]
    key = (id(hub), "op", "aq")
    stamp, answer = channels._access_cache[key]
    channels._access_cache[key] = (stamp - channels.ACCESS_TTL_S - 0.01, answer)  # expired
    t0 = time.monotonic()
    assert channels.source_access(hub, op, "aq") == "answer 1"  # type: ignore[arg-type,comparison-overlap]
    assert channels.source_access(hub, op, "aq") == "answer 1"  # type: ignore[arg-type,comparison-overlap]
    assert time.monotonic() - t0 < 0.1  # not waiting for the read
    deadline = time.monotonic() + 5
    while channels._access_cache[key][1].access != "answer 2" and time.monotonic() < deadline:  # type: ignore[comparison-overlap]
        time.sleep(0.02)
    assert reads == ["aq", "aq"]  # one read in the background, not one per call
    assert channels.source_access(hub, op, "aq") == "answer 2"  # type: ignore[arg-type,comparison-overlap]
    stamp, answer = channels._access_cache[key]
    grace = channels.ACCESS_TTL_S + channels.ACCESS_GRACE_S
    channels._access_cache[key] = (stamp - grace - 0.01, answer)  # long expired
    assert channels.source_access(hub, op, "aq") == "answer 3"  # type: ignore[arg-type,comparison-overlap]
    channels._access_cache.pop(key, None)
