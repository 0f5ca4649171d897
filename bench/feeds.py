"""Live-feed intake throughput and latency, with the baselines measured in the same run.

    .venv/bin/python bench/feeds.py [--events 20000] [--batch 500] [--mqtt 5000] [--out DIR]

HTTP push: batches of ``--batch`` events to ``POST /v1/feeds/<id>/events`` of a real
uvicorn; events/s accepted, latency from POST to the websocket subscriber of
``feed:<id>``, and the time until the lake table holds every event.  Baselines: the
same events appended one transaction each (``Bus.publish`` per event) and validation
alone.  MQTT: ``--mqtt`` single-event QoS 1 messages through the machine's Mosquitto
into the hub's log, against a bare paho subscriber that only counts (the broker floor).
Every loop is bounded in count and time.  State goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from websockets.sync.client import connect

from catalog.datasets.manifest import parse_manifest
from catalog.domain.channels import feed_channel
from eventlog.sqllog import EventLog
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.settings import Settings
from pipelines.feeds import check_events

COLUMNS = [
    {"name": "station_id", "type": "string"},
    {"name": "measured_at", "type": "timestamptz"},
    {"name": "aqi", "type": "int32"},
    {"name": "pm25", "type": "decimal(6,1)"},
    {"name": "no2", "type": "float64"},
]
START = datetime(2024, 6, 1, tzinfo=UTC)


def events(n: int, first: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "station_id": f"GYAQ{(i % 20) + 1:02d}",
            "measured_at": (START + timedelta(hours=i // 20)).isoformat(),
            "aqi": 40 + i % 60,
            "pm25": f"{20 + (i % 300) / 10:.1f}",
            "no2": 20.5,
        }
        for i in range(first, first + n)
    ]


def manifest(
    feed_id: str, connector: str, options: dict[str, Any], profile: str | None = None
) -> Any:
    source: dict[str, Any] = {"connector": connector, "options": options}
    if profile:
        source["profile"] = profile
    return parse_manifest(
        {
            "id": feed_id,
            "title": "空气质量实时数据",
            "agency": "gy_hbj",
            "steward": {"name": "李娜"},
            "sharing": {"type": "unconditional"},
            "classification": "general",
            "columns": COLUMNS,
            "primary_key": ["station_id", "measured_at"],
            "source": source,
        }
    )


def wait(check: Any, timeout: float) -> float:
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("bench step did not finish in time")
        time.sleep(0.01)
    return time.perf_counter() - start


def bench_push(root: Path, n: int, batch: int) -> dict[str, float]:
    hub = Hub.open(Settings(home=root / "push", bus_poll_s=0.05))
    hub.store.identity.upsert_agency("gy_hbj", "贵阳市生态环境局")
    hub.store.identity.create_principal("hbj", "gy_hbj", "环保局", "steward")
    token = hub.store.identity.issue_token("hbj", ttl=timedelta(hours=1))
    m = manifest("aq_push", "push", {"flush_rows": 5000, "flush_seconds": 1})
    hub.store.register_dataset(m)
    data = events(n)
    received: dict[int, float] = {}
    port = free_port()
    try:
        with serving(hub, port), httpx.Client(timeout=60) as http:
            url = f"http://127.0.0.1:{port}/v1/feeds/aq_push/events"
            auth = {"Authorization": f"Bearer {token}"}

            def listen() -> None:
                with connect(f"ws://127.0.0.1:{port}/v1/ws", additional_headers=auth) as ws:
                    ws.recv(10)
                    ws.send(json.dumps({"op": "subscribe", "channel": "feed:aq_push"}))
                    ws.recv(10)
                    ready.set()
                    deadline = time.monotonic() + 300
                    while len(received) < n and time.monotonic() < deadline:  # bounded
                        msg = json.loads(ws.recv(60))
                        if msg.get("type") == "message":
                            received[msg["offset"]] = time.perf_counter()

            # A warm-up batch (first calls load pyarrow kernels, start the feed).
            warm = events(batch, first=2 * n)
            http.post(url, headers=auth, json=warm).raise_for_status()
            # First with nobody listening: the intake alone.
            start = time.perf_counter()
            for i in range(0, n, batch):
                http.post(url, headers=auth, json=data[i : i + batch]).raise_for_status()
            alone_s = time.perf_counter() - start

            def flushed() -> bool:
                v = hub.store.latest_versions().get("aq_push")
                return v is not None and v.total_rows >= n + batch

            lake_s = alone_s + wait(flushed, 300)
            # Then the same volume again with a websocket subscriber of feed:<id>.
            ready = threading.Event()
            listener = threading.Thread(target=listen, daemon=True)
            listener.start()
            ready.wait(20)
            sent: dict[int, float] = {}
            second = events(n, first=n)
            start = time.perf_counter()
            for i in range(0, n, batch):
                sent[n + batch + i + 1] = time.perf_counter()
                r = http.post(url, headers=auth, json=second[i : i + batch])
                r.raise_for_status()
            push_s = time.perf_counter() - start
            listener.join(300)
    finally:
        hub.close()
    lat = [received[o] - t for o, t in sent.items() if o in received]
    log = EventLog(f"sqlite:///{root / 'baseline.db'}")
    sample = check_events(m, data[:2000]).records  # a sample: this path is slow
    start = time.perf_counter()
    for record in sample:
        log.append(feed_channel("base"), "feed.event", record, {"agency": "gy_hbj"})
    per_event_s = (time.perf_counter() - start) * n / len(sample)
    log.dispose()
    start = time.perf_counter()
    check_events(m, data)
    validate_s = time.perf_counter() - start
    return {
        "push_alone_per_s": n / alone_s,
        "push_events_per_s": n / push_s,
        "per_event_publish_per_s": n / per_event_s,
        "validate_events_per_s": n / validate_s,
        "ws_latency_p50_ms": statistics.median(lat) * 1000,
        "ws_latency_max_ms": max(lat) * 1000,
        "delivered": len(received),
        "all_in_lake_s": lake_s,
    }


def _publisher(topic: str, n: int) -> None:
    pub = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}"
    )
    pub.max_inflight_messages_set(100)
    pub.connect("127.0.0.1", 1883)
    pub.loop_start()
    infos = [pub.publish(f"{topic}/GYAQ01", json.dumps(e), qos=1) for e in events(n)]
    for info in infos:
        info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()


def bench_mqtt(root: Path, n: int) -> dict[str, float]:
    # Floor: a bare subscriber that only counts, same broker, same QoS, same payloads.
    topic = f"bench/{uuid.uuid4().hex[:8]}/floor"
    count = [0]
    sub = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{uuid.uuid4().hex[:6]}"
    )
    sub.on_message = lambda *_: count.__setitem__(0, count[0] + 1)
    sub.connect("127.0.0.1", 1883)
    sub.subscribe(f"{topic}/+", qos=1)
    sub.loop_start()
    time.sleep(0.5)
    start = time.perf_counter()
    _publisher(topic, n)
    wait(lambda: count[0] >= n, 300)
    floor_s = time.perf_counter() - start
    sub.disconnect()
    sub.loop_stop()

    hub = Hub.open(Settings(home=root / "mqtt", bus_poll_s=0.05))
    hub.store.identity.upsert_agency("gy_hbj", "贵阳市生态环境局")
    topic = f"bench/{uuid.uuid4().hex[:8]}/hub"
    hub.sources.sources.add_profile(
        "gy_hbj",
        "broker",
        "mqtt",
        protected=hub.sources.protected,
        settings={"host": "127.0.0.1", "port": 1883, "topic_prefix": topic},
    )
    m = manifest("aq_live", "mqtt", {"topics": ["+"], "flush_rows": 5000}, profile="broker")
    hub.register(m, file="<aq_live>")
    try:
        with serving(hub, free_port()):
            start = time.perf_counter()
            _publisher(topic, n)
            wait(lambda: hub.log.head(feed_channel("aq_live")) >= n, 300)
            hub_s = time.perf_counter() - start
    finally:
        hub.close()
    return {"mqtt_floor_per_s": n / floor_s, "mqtt_hub_per_s": n / hub_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--mqtt", type=int, default=5_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        root = Path(tmp)
        push = bench_push(root, args.events, args.batch)
        mq = bench_mqtt(root, args.mqtt)
    r = {**push, **mq}
    print(f"HTTP push, {args.events:,} events in batches of {args.batch}:")
    alone, base = r["push_alone_per_s"], r["per_event_publish_per_s"]
    print(f"  accepted, no subscriber    {alone:>8,.0f} events/s")
    print(f"  accepted, 1 ws subscriber  {r['push_events_per_s']:>8,.0f} events/s")
    print(f"  baseline: one log transaction per event (Bus.publish) {base:,.0f} events/s")
    print(f"    → push (no subscriber) is {alone / base:.1f}× the baseline")
    print(f"  validation alone           {r['validate_events_per_s']:>8,.0f} events/s")
    print(
        f"  POST → websocket           p50 {r['ws_latency_p50_ms']:.1f} ms, max "
        f"{r['ws_latency_max_ms']:.1f} ms ({r['delivered']:,.0f} delivered)"
    )
    print(f"  all in the lake            {r['all_in_lake_s']:.2f} s after the first POST")
    print(f"MQTT, {args.mqtt:,} single-event QoS 1 messages:")
    floor, hub = r["mqtt_floor_per_s"], r["mqtt_hub_per_s"]
    print(f"  bare subscriber (floor)    {floor:>8,.0f} msg/s")
    print(f"  hub intake (logged)        {hub:>8,.0f} msg/s → {hub / floor:.2f}× the floor")


if __name__ == "__main__":
    main()
