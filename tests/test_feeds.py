"""Live feeds: validation, the MQTT intake against the machine's Mosquitto, HTTP push,
delivery on the websocket, micro-batch flushes to the lake, and restarts that lose nothing."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pyarrow as pa
import pytest
import yaml
from websockets.sync.client import connect

from catalog.datasets.manifest import Manifest, parse_manifest
from catalog.domain.channels import feed_channel
from catalog.errors import ManifestError
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.settings import Settings
from pipelines.feeds import (
    EVENT_TYPE,
    check_events,
    feed_options,
    flush_feed,
    parse_batch,
)
from tests.conftest import file_source, manifest_dict

MQTT = ("127.0.0.1", 1883)
ROOT = Path(__file__).resolve().parents[1]


def reading(station: str = "GYAQ01", hour: int = 0, **over: Any) -> dict[str, Any]:
    event = {
        "station_id": station,
        "measured_at": f"2024-06-01T{hour:02d}:00:00+08:00",
        "aqi": 57,
        "pm25": "31.4",
        "no2": 22.5,
    }
    event.update(over)
    return event


AQ_COLUMNS = [
    {"name": "station_id", "type": "string"},
    {"name": "measured_at", "type": "timestamptz"},
    {"name": "aqi", "type": "int32"},
    {"name": "pm25", "type": "decimal(6,1)"},
    {"name": "no2", "type": "float64"},
]


@pytest.fixture
def topic() -> str:
    return f"blockhub-test/{uuid.uuid4().hex[:10]}/aq"


@pytest.fixture
def aq_feed(make_manifest: Callable[..., Manifest], topic: str) -> Callable[..., Manifest]:
    """An air-quality readings feed of 生态环境局, by MQTT or push."""

    def make(connector: str = "mqtt", **options: Any) -> Manifest:
        opts: dict[str, Any] = {"flush_rows": 5, "flush_seconds": 0.5, **options}
        source: dict[str, Any] = {"connector": connector, "options": opts}
        if connector == "mqtt":
            opts.setdefault("topics", ["#"])  # under the profile's topic_prefix
            source["profile"] = "broker"
        return make_manifest(
            id="aq_live" if connector == "mqtt" else "aq_push",
            title="空气质量小时监测实时数据",
            agency="gy_hbj",
            columns=AQ_COLUMNS,
            primary_key=["station_id", "measured_at"],
            block_keys=[],
            source=source,
        )

    return make


def broker(hub: Hub, topic: str, **settings: Any) -> None:
    """The environment bureau's MQTT profile ``broker``: the machine's Mosquitto, topics
    under ``topic`` (a password, if given, is the profile's secret)."""
    password = settings.pop("password", None)
    hub.sources.sources.add_profile(
        "gy_hbj",
        "broker",
        "mqtt",
        protected=hub.sources.protected,
        settings={"host": "127.0.0.1", "port": 1883, "topic_prefix": topic}
        | ({"username": "aq"} if password else {})
        | settings,
        secrets={"password": password} if password else {},
    )


def test_check_events_casts_columns_and_names_each_bad_event(
    aq_feed: Callable[..., Manifest],
) -> None:
    m = aq_feed("push")
    events: list[Any] = [
        reading(hour=1),
        reading(hour=2, aqi="high"),
        [1, 2],
        reading(hour=3, measured_at="2024-06-01T03:00:00"),
        {k: v for k, v in reading(hour=4).items() if k != "station_id"},
        reading(hour=5, colour="red"),
        reading(hour=6, pm25=12.2, no2=None),
    ]
    checked = check_events(m, events)
    reasons = {e.index: e.reason for e in checked.errors}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert reasons[1].startswith("aqi: 'high' is not a int32")
    assert reasons[2] == "an event must be a JSON object, not an array"
    assert "timestamp with a zone offset" in reasons[3]
    assert reasons[4] == "station_id: key column is missing"
    assert reasons[5] == "undeclared field(s) colour"
    assert checked.table.num_rows == 2
    assert checked.table.schema == m.arrow_schema
    assert checked.records[0] == {
        "station_id": "GYAQ01",
        "measured_at": "2024-05-31T17:00:00+00:00",
        "aqi": 57,
        "pm25": "31.4",
        "no2": 22.5,
    }
    assert (checked.records[1]["pm25"], checked.records[1]["no2"]) == ("12.2", None)


def test_decimal_that_loses_digits_is_rejected(aq_feed: Callable[..., Manifest]) -> None:
    checked = check_events(aq_feed("push"), [reading(pm25="12.25")])
    assert checked.errors and checked.errors[0].reason.startswith("pm25: '12.25'")


def test_feed_options_are_checked(aq_feed: Callable[..., Manifest]) -> None:
    with pytest.raises(ManifestError, match=r"source\.options\.topics: an mqtt feed needs topics"):
        feed_options(aq_feed("mqtt", topics=[]))
    with pytest.raises(ManifestError, match=r"source\.options\.flush_rows"):
        feed_options(aq_feed("push", flush_rows=0))
    with pytest.raises(ManifestError, match=r"source\.options\.colour: not an option"):
        feed_options(aq_feed("push", colour="red"))
    # The broker and its credentials are the profile's, never the manifest's.
    with pytest.raises(ManifestError, match=r"source\.options\.host: the server is the conn"):
        feed_options(aq_feed("mqtt", host="169.254.169.254"))
    with pytest.raises(ManifestError, match=r"source\.options\.password: credentials live"):
        feed_options(aq_feed("mqtt", password="${BLOCKHUB_AUDIT_KEY}"))
    # A chosen client id could take over another feed's persistent session on the broker.
    with pytest.raises(ManifestError, match=r"source\.options\.client_id: the hub names"):
        feed_options(aq_feed("mqtt", client_id="blockhub-other-feed"))


def test_parse_batch_reads_arrays_objects_and_ndjson() -> None:
    assert parse_batch(b'[{"a": 1}, {"a": 2}]', "application/json") == [{"a": 1}, {"a": 2}]
    assert parse_batch(b'{"a": 1}', "application/json") == [{"a": 1}]
    assert parse_batch(b'{"a": 1}\n\n{"a": 2}\n', "application/x-ndjson") == [{"a": 1}, {"a": 2}]
    with pytest.raises(Exception, match="NDJSON line 2 is not JSON"):
        parse_batch(b'{"a": 1}\n{"a": \n', "application/x-ndjson")


# -- against the live hub --------------------------------------------------------------


def _wait(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _lake_rows(hub: Hub, dataset: str) -> list[dict[str, Any]]:
    if not hub.lake.exists(dataset) or hub.lake.current(dataset) is None:
        return []
    rows: list[dict[str, Any]] = hub.lake.table(dataset).scan().to_arrow().to_pylist()
    return rows


def _publish(topic: str, payloads: list[bytes]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    client.connect(*MQTT)
    client.loop_start()
    try:
        for p in payloads:
            client.publish(topic, p, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def _ws_messages(ws: Any, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        msg = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if msg["type"] == "message":
            out.append(msg)
    return out


@pytest.fixture
def hbj_steward(hub: Hub) -> str:
    hub.store.identity.create_principal("hbj_steward", "gy_hbj", "环保局数据管理员", "steward")
    return hub.store.identity.issue_token("hbj_steward", ttl=timedelta(hours=1))


def test_mqtt_events_reach_the_websocket_at_once_and_the_lake_in_micro_batches(
    hub: Hub, tokens: dict[str, str], aq_feed: Callable[..., Manifest], topic: str
) -> None:
    broker(hub, topic)
    m = aq_feed("mqtt", flush_rows=3, flush_seconds=60)
    hub.store.register_dataset(m)
    port = free_port()
    with (
        serving(hub, port),
        connect(
            f"ws://127.0.0.1:{port}/v1/ws",
            additional_headers={"Authorization": f"Bearer {tokens['developer']}"},
        ) as ws,
    ):
        assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
        ws.send(json.dumps({"op": "subscribe", "channel": "feed:aq_live"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        state_url = f"http://127.0.0.1:{port}/v1/feeds/aq_live"
        auth = {"Authorization": f"Bearer {tokens['developer']}"}
        # the broker keeps messages for our session only once it has acknowledged it
        _wait(lambda: httpx.get(state_url, headers=auth).json()["mqtt_connected"])
        _publish(
            f"{topic}/GYAQ01",
            [
                json.dumps(reading(hour=1)).encode(),
                json.dumps([reading(hour=2), reading(hour=2, aqi=1.5)]).encode(),
                b"not json",
            ],
        )
        got = _ws_messages(ws, 2)
        assert [g["event"] for g in got] == ["feed.event", "feed.event"]
        assert got[0]["channel"] == "feed:aq_live"
        assert got[0]["source"] == {"agency": "gy_hbj", "feed": "aq_live"}
        assert got[0]["data"]["measured_at"] == "2024-05-31T17:00:00+00:00"
        assert got[0]["data"]["pm25"] == "31.4"
        assert _lake_rows(hub, "aq_live") == []  # 2 of 3: below flush_rows, within 60 s
        _publish(f"{topic}/GYAQ02", [json.dumps(reading("GYAQ02", hour=1)).encode()])
        assert _ws_messages(ws, 1)[0]["data"]["station_id"] == "GYAQ02"
        rows = _wait(lambda: _lake_rows(hub, "aq_live"))
        assert sorted((r["station_id"], r["measured_at"].hour) for r in rows) == [
            ("GYAQ01", 17),
            ("GYAQ01", 18),
            ("GYAQ02", 17),
        ]
        version = hub.store.get_version("aq_live")
        assert (version.version, version.rows_added, version.total_rows) == (1, 3, 3)
        assert version.cursor == {"log_epoch": hub.log.epoch, "offset": 3}
        updated = hub.log.read("dataset:aq_live")
        assert [(u.type, u.data["version"]) for u in updated] == [("dataset.updated", 1)]
        r = httpx.get(
            f"http://127.0.0.1:{port}/v1/feeds/aq_live",
            headers={"Authorization": f"Bearer {tokens['developer']}"},
        )
        assert r.json()["accepted"] == 3 and r.json()["rejected"] == 2
        assert r.json()["mqtt_connected"] is True


def test_feed_channel_needs_read_permission(
    hub: Hub, tokens: dict[str, str], aq_feed: Callable[..., Manifest], live: str
) -> None:
    m = aq_feed("push")
    hub.store.register_dataset(
        m.model_copy(
            update={
                "sharing": m.sharing.model_copy(
                    update={"type": "none", "legal_basis": "《环境监测数据管理办法》"}
                )
            }
        )
    )
    with connect(
        f"ws://{live}/v1/ws",
        additional_headers={"Authorization": f"Bearer {tokens['steward']}"},
    ) as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"op": "subscribe", "channel": "feed:aq_push"}))
        assert json.loads(ws.recv(timeout=10))["code"] == "forbidden"
        ws.send(json.dumps({"op": "subscribe", "channel": "feed:nope"}))
        assert json.loads(ws.recv(timeout=10))["code"] == "dataset_not_found"


def test_push_accepts_a_valid_batch_and_rejects_a_bad_one_whole(
    hub: Hub,
    tokens: dict[str, str],
    hbj_steward: str,
    aq_feed: Callable[..., Manifest],
    live: str,
    topic: str,
) -> None:
    broker(hub, topic)
    hub.store.register_dataset(aq_feed("push", flush_rows=4, flush_seconds=60))
    hub.store.register_dataset(aq_feed("mqtt"))
    url = f"http://{live}/v1/feeds/aq_push/events"
    steward = {"Authorization": f"Bearer {hbj_steward}"}
    good = [reading(hour=h) for h in range(3)]
    r = httpx.post(url, headers=steward, json=good)
    assert r.status_code == 202, r.text
    assert r.json() == {
        "ok": True,
        "feed": "aq_push",
        "accepted": 3,
        "first_offset": 1,
        "last_offset": 3,
    }
    bad = [reading(hour=5), reading(hour=6, aqi="x"), reading(hour=7), {"station_id": None}]
    r = httpx.post(url, headers=steward, json=bad)
    assert r.status_code == 422
    body = r.json()
    assert body["ok"] is False and body["code"] == "invalid_events"
    assert body["error"] == "2 of 4 event(s) are invalid; none was accepted"
    assert [p["index"] for p in body["detail"]["rejected"]] == [1, 3]
    assert "station_id: key column is null" in body["detail"]["rejected"][1]["reason"]
    assert hub.log.head(feed_channel("aq_push")) == 3  # nothing of the bad batch
    assert _lake_rows(hub, "aq_push") == []
    ndjson = b"\n".join(json.dumps(reading("GYAQ09", hour=h)).encode() for h in range(2))
    r = httpx.post(url, headers={**steward, "Content-Type": "application/x-ndjson"}, content=ndjson)
    assert r.status_code == 202 and r.json()["last_offset"] == 5
    rows = _wait(lambda: _lake_rows(hub, "aq_push"))
    assert len(rows) == 5  # one flush: 5 pending ≥ flush_rows 4

    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    assert httpx.post(url, headers=admin, json=[reading(hour=9)]).status_code == 202
    denied = httpx.post(url, headers={"Authorization": f"Bearer {tokens['developer']}"}, json=good)
    assert denied.status_code == 403 and "steward of gy_hbj" in denied.json()["error"]
    assert httpx.post(url, json=good).status_code == 401
    other = f"http://{live}/v1/feeds/aq_live/events"
    assert httpx.post(other, headers=steward, json=good).status_code == 409
    missing = f"http://{live}/v1/feeds/nope/events"
    assert httpx.post(missing, headers=steward, json=good).status_code == 404
    r = httpx.post(url, headers=steward, content=b"{oops")
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"


@pytest.fixture
def flushing_hub(settings: Settings, hub: Hub) -> Iterator[Hub]:
    """A second hub object on the same storage, with ``feed_flush: process``."""
    h = Hub.open(settings.model_copy(update={"feed_flush": "process"}))
    yield h
    h.close()


def test_flushes_run_in_a_worker_process_that_is_replaced_when_it_dies(
    flushing_hub: Hub, hbj_steward: str, aq_feed: Callable[..., Manifest]
) -> None:
    """The lake writes of a feed leave the serving process (D34); a killed worker costs
    no event: the next flush starts a new one and commits from the recorded offset."""
    hub = flushing_hub
    hub.store.register_dataset(aq_feed("push", flush_rows=2, flush_seconds=60))
    steward = {"Authorization": f"Bearer {hbj_steward}"}
    port = free_port()
    with serving(hub, port) as server:
        runner = server.config.app.state.feeds
        url = f"http://127.0.0.1:{port}/v1/feeds/aq_push/events"
        batch = [reading(hour=h) for h in range(2)]
        assert httpx.post(url, headers=steward, json=batch).status_code == 202
        _wait(lambda: len(_lake_rows(hub, "aq_push")) == 2, timeout=30)
        first = runner.flusher.pid
        assert first is not None and first != os.getpid()
        os.kill(first, signal.SIGKILL)
        _wait(lambda: not Path(f"/proc/{first}").exists() or "Z" in _proc_state(first))
        batch = [reading(hour=h) for h in range(2, 4)]
        assert httpx.post(url, headers=steward, json=batch).status_code == 202
        rows = _wait(lambda: len(_lake_rows(hub, "aq_push")) == 4, timeout=30)
        assert rows
        assert runner.flusher.pid not in (None, first)
    assert sorted(r["measured_at"].hour for r in _lake_rows(hub, "aq_push")) == [16, 17, 18, 19]


def test_a_feeds_lake_table_is_made_when_the_feed_starts(
    hub: Hub, hbj_steward: str, aq_feed: Callable[..., Manifest], live: str
) -> None:
    """Not by its first flush, which would pay for it in the middle of live traffic."""
    hub.store.register_dataset(aq_feed("push", flush_rows=1000, flush_seconds=3600))
    auth = {"Authorization": f"Bearer {hbj_steward}"}
    base = f"http://{live}/v1/feeds/aq_push"
    assert httpx.post(f"{base}/events", headers=auth, json=[reading()]).status_code == 202
    state = _wait(lambda: (s := httpx.get(base, headers=auth).json())["lake_ready"] and s)
    assert state["committed_offset"] == 0  # nothing flushed: 1 event of 1,000, within 1 h
    assert hub.lake.exists("aq_push") and _lake_rows(hub, "aq_push") == []


@pytest.mark.parametrize("mode", ["thread", "auto"])
def test_flushes_can_stay_in_the_serving_process(
    settings: Settings, hbj_steward: str, aq_feed: Callable[..., Manifest], mode: str
) -> None:
    """``feed_flush: thread`` flushes in a thread of the server, and so does ``auto`` in a
    program that embeds the hub (only the ``blockhub`` command resolves it to a process)."""
    h = Hub.open(settings.model_copy(update={"feed_flush": mode}))
    h.store.register_dataset(aq_feed("push", flush_rows=2, flush_seconds=60))
    port = free_port()
    with serving(h, port) as server:
        url = f"http://127.0.0.1:{port}/v1/feeds/aq_push/events"
        batch = [reading(hour=hour) for hour in range(2)]
        auth = {"Authorization": f"Bearer {hbj_steward}"}
        assert httpx.post(url, headers=auth, json=batch).status_code == 202
        _wait(lambda: len(_lake_rows(h, "aq_push")) == 2, timeout=30)
        assert server.config.app.state.feeds.flusher.pid is None
    h.close()


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


# -- restarts --------------------------------------------------------------------------


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    # The server's log goes to a file: an unread pipe fills up and blocks the server.
    log_path = Path(env["BLOCKHUB_HOME"]).parent / f"serve-{port}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from hub.cli.main import main; main()",
                "serve",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    def up() -> bool:
        assert proc.poll() is None, log_path.read_text(errors="replace")[-4000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    _wait(up, timeout=60)
    return proc


def test_killed_hub_loses_no_accepted_event(
    settings: Settings, tmp_path: Path, topic: str, aq_feed: Callable[..., Manifest]
) -> None:
    """SIGKILL a real ``blockhub serve`` with accepted but unflushed events (pushed and
    from MQTT), publish more while it is down, restart: every event is in the lake once."""
    folder = tmp_path / "manifests"
    folder.mkdir()
    for m in (
        aq_feed("push", flush_rows=5, flush_seconds=3600),
        aq_feed("mqtt", flush_rows=4, flush_seconds=3600),
    ):
        data = m.model_dump(mode="json", exclude_defaults=True)
        (folder / f"{m.id}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    setup = Hub.open(settings)
    setup.store.identity.upsert_agency("gy_hbj", "贵阳市生态环境局")
    broker(setup, topic)
    setup.store.identity.create_principal("hbj", "gy_hbj", "环保局数据管理员", "steward")
    token = setup.store.identity.issue_token("hbj", ttl=timedelta(hours=1))
    setup.close()
    env = {
        **os.environ,
        "BLOCKHUB_HOME": str(settings.home),
        "BLOCKHUB_MANIFESTS": str(folder),
        "BLOCKHUB_BUS_POLL_S": "0.05",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/feeds/aq_push/events"
    auth = {"Authorization": f"Bearer {token}"}
    proc = _serve(env, port)
    try:
        ok = httpx.post(url, headers=auth, json=[reading(hour=h) for h in range(5)])
        assert ok.status_code == 202
        hub = Hub.open(settings)
        try:
            _wait(lambda: len(_lake_rows(hub, "aq_push")) == 5)  # flushed: 5 = flush_rows
            one = httpx.post(url, headers=auth, json=[reading("GYAQ02", hour=1)])
            assert one.status_code == 202  # accepted, not flushed (flush_seconds 3600)
            _publish(
                f"{topic}/GYAQ03", [json.dumps(reading("GYAQ03", hour=h)).encode() for h in (1, 2)]
            )
            _wait(lambda: hub.log.head(feed_channel("aq_live")) == 2)
            assert len(_lake_rows(hub, "aq_push")) == 5
            state = httpx.get(f"http://127.0.0.1:{port}/v1/feeds/aq_push", headers=auth).json()
            worker = state["flush_worker_pid"]
            assert worker not in (None, proc.pid)
            assert state["lake_ready"] is True  # made ready at start, not by the first flush
        finally:
            hub.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # The flush worker does not outlive the hub it served.
    _wait(lambda: not Path(f"/proc/{worker}").exists() or _proc_state(worker) == "Z")
    # While the hub is down the broker keeps QoS 1 messages for its persistent session.
    _publish(f"{topic}/GYAQ03", [json.dumps(reading("GYAQ03", hour=h)).encode() for h in (3, 4)])
    proc = _serve(env, port)
    try:
        assert (
            httpx.post(
                url, headers=auth, json=[reading("GYAQ02", hour=h) for h in (2, 3, 4, 5)]
            ).status_code
            == 202
        )
        hub = Hub.open(settings)
        try:
            pushed = _wait(
                lambda: (rows := _lake_rows(hub, "aq_push")) and len(rows) >= 10 and rows
            )
            from_mqtt = _wait(
                lambda: (rows := _lake_rows(hub, "aq_live")) and len(rows) >= 4 and rows
            )
        finally:
            hub.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    keys = sorted((r["station_id"], r["measured_at"].hour) for r in pushed)
    assert len(keys) == 10 and len(set(keys)) == 10
    mqtt_keys = sorted((r["station_id"], r["measured_at"].hour) for r in from_mqtt)
    assert mqtt_keys == [("GYAQ03", 17), ("GYAQ03", 18), ("GYAQ03", 19), ("GYAQ03", 20)]
    table = pa.Table.from_pylist(pushed)
    assert table.num_rows == 10


def test_merge_feed_keeps_the_last_event_per_key(
    hub: Hub, aq_feed: Callable[..., Manifest]
) -> None:
    base = aq_feed("push")
    m = base.model_copy(update={"source": base.source.model_copy(update={"mode": "merge"})})
    hub.store.register_dataset(m)
    events = [reading(hour=1, aqi=50), reading(hour=2), reading(hour=1, aqi=61)]
    checked = check_events(m, events)
    hub.log.append_many(feed_channel(m.id), EVENT_TYPE, checked.records)
    flush = functools.partial(
        flush_feed,
        m,
        lake=hub.lake,
        store=hub.store,
        read=hub.log.read,
        epoch=hub.log.epoch,
        publisher=hub.bus.publish,
    )
    assert flush() is not None
    hub.log.append_many(feed_channel(m.id), EVENT_TYPE, [checked.records[1] | {"aqi": 70}])
    v2 = flush()
    assert v2 is not None and v2.total_rows == 2
    assert flush() is None  # nothing past the committed offset
    rows = {r["measured_at"].hour: r["aqi"] for r in _lake_rows(hub, m.id)}
    assert rows == {17: 61, 18: 70}
    assert [r.trigger for r in hub.store.list_runs(m.id)] == ["feed", "feed"]


def test_a_feed_is_not_pulled_and_its_options_are_validated_by_the_cli(
    hub: Hub, aq_feed: Callable[..., Manifest], tmp_path: Path
) -> None:
    hub.store.register_dataset(aq_feed("push"))
    run = hub.ingest("aq_push")
    assert run.status == "failed"
    assert run.error is not None and "a push feed is not pulled" in run.error
    bad = aq_feed("mqtt", flush_seconds=-1)
    path = tmp_path / "bad_feed.yaml"
    path.write_text(yaml.safe_dump(bad.model_dump(mode="json"), allow_unicode=True))
    res = subprocess.run(
        [str(Path(sys.executable).parent / "blockhub"), "validate", str(path)],
        env={**os.environ, "BLOCKHUB_HOME": str(tmp_path / "h")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert str(path) in res.stderr and "source.options.flush_seconds" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.airflow
def test_feeds_get_no_airflow_dag(
    tmp_path: Path, hub: Hub, aq_feed: Callable[..., Manifest], tickets_file: Path
) -> None:
    broker(hub, "blockhub-test/dag")
    for m in (aq_feed("push"), aq_feed("mqtt")):
        hub.store.register_dataset(m)
    source = {**file_source(hub, tickets_file.parent, "*.parquet"), "cursor": "updated_at"}
    hub.register(parse_manifest(manifest_dict(source=source)), file="<tickets>")
    code = (
        "import pipelines.dags.blockhub_datasets as d; "
        "print(sorted(k for k in vars(d) if k.startswith('blockhub_ingest_')))"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BLOCKHUB_")},
        "BLOCKHUB_HOME": str(hub.settings.home),
        "AIRFLOW_HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "['blockhub_ingest_tickets']"


def test_a_broker_that_is_down_does_not_stop_the_hub(
    hub: Hub,
    tokens: dict[str, str],
    aq_feed: Callable[..., Manifest],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker(hub, "blockhub-test/down", port=free_port(), password="never-logged-secret")
    hub.store.register_dataset(aq_feed("mqtt"))
    hub.store.register_dataset(aq_feed("push"))
    port = free_port()
    auth = {"Authorization": f"Bearer {tokens['admin']}"}
    with serving(hub, port):
        base = f"http://127.0.0.1:{port}/v1/feeds"
        assert httpx.get(f"{base}/aq_live", headers=auth).json()["running"] is False
        r = httpx.post(f"{base}/aq_push/events", headers=auth, json=[reading()])
        assert r.status_code == 202
        too_many = [reading(hour=h % 24) for h in range(10_001)]
        r = httpx.post(f"{base}/aq_push/events", headers=auth, json=too_many, timeout=60)
        assert r.status_code == 413 and r.json()["code"] == "too_large"
    assert "feed aq_live not started: mqtt broker 127.0.0.1:" in caplog.text
    assert "never-logged-secret" not in caplog.text
