"""A live MQTT feed across a broker outage and an event-log outage (private servers).

The hub's feed subscribes to a private mosquitto (persistent, as in production) and
keeps events in a private Redis event log.  What we rely on (docs/feeds.md): QoS 1 with
a persistent session — the broker keeps and redelivers what the hub has not
acknowledged — and the hub acknowledges a message only once the log holds its events.

- The broker stopped and started mid-feed: the hub reconnects (paho's backoff, 1–30 s)
  and resubscribes; every event published, before, during (queued by the publisher) and
  after the outage, is in the feed's channel — at least once: QoS 1 lets a publisher that
  reconnects resend what it had not seen acknowledged, and the broker forwards both.
- The event log stopped while messages arrive: the hub keeps retrying them, acknowledges
  nothing, and when the log is back every event is there — none dropped.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest

from catalog.datasets.manifest import parse_manifest
from eventlog.redislog import RedisEventLog
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.settings import Settings
from tests.conftest import manifest_dict
from tests.private_services import PrivateMosquitto, PrivateRedis

COLUMNS = [{"name": "seq", "type": "int64"}, {"name": "station_id", "type": "string"}]


class Publisher:
    """A station: a persistent QoS 1 MQTT client that queues what it publishes while the
    broker is away and sends it when it is back (paho's own behaviour)."""

    def __init__(self, port: int, topic: str) -> None:
        self.topic = topic
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"station-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.infos: list[mqtt.MQTTMessageInfo] = []

    def send(self, first: int, n: int) -> None:
        for i in range(first, first + n):
            payload = orjson.dumps({"seq": i, "station_id": "GYAQ01"})
            self.infos.append(self.client.publish(self.topic, payload, qos=1))

    def wait_all(self, timeout: float = 60) -> None:
        """Until the broker has acknowledged every message (a message published while the
        broker was away is queued, its info says "not connected", and goes out later)."""
        deadline = time.monotonic() + timeout
        while not all(_published(info) for info in self.infos):
            assert time.monotonic() < deadline, "the broker never took every message"
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _published(info: mqtt.MQTTMessageInfo) -> bool:
    # is_published() raises for a message queued while disconnected (its rc says so) even
    # once it went out after the reconnect; the flag it reads is the truth.
    return bool(info._published)


class FeedWorld:
    def __init__(
        self, hub: Hub, base: str, token: str, broker: PrivateMosquitto, bus: PrivateRedis
    ) -> None:
        self.hub, self.base, self.token, self.broker, self.bus = hub, base, token, broker, bus
        self.topic = ""

    def status(self) -> dict[str, Any]:
        r = httpx.get(
            f"http://{self.base}/v1/feeds/aq_live",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        return dict(r.json())

    def logged(self) -> list[int]:
        log = RedisEventLog(self.bus.url())
        try:
            return [m.data["seq"] for m in log.read("feed:aq_live", 0, 100_000)]
        finally:
            log.dispose()

    def wait_logged(self, n: int, timeout: float = 90) -> list[int]:
        deadline = time.monotonic() + timeout
        got: list[int] = []
        while time.monotonic() < deadline:
            try:
                got = self.logged()
            except Exception:
                got = []
            if len(got) >= n:
                return got
            time.sleep(0.2)
        raise AssertionError(f"{len(got)} of {n} events in the log")


@pytest.fixture
def feed(tmp_path: Path) -> Iterator[FeedWorld]:
    broker = PrivateMosquitto(tmp_path / "mosquitto").start()
    bus = PrivateRedis(tmp_path / "redis", persist="aof").start()
    settings = Settings(
        home=tmp_path / "home", events_url=bus.url(), bus_poll_s=0.05, feed_flush="thread"
    )
    hub = Hub.open(settings)
    hub.store.identity.upsert_agency("gy_hbj", "生态环境局")
    hub.store.identity.create_principal("hbj", "gy_hbj", "hbj", "steward")
    token = hub.store.identity.issue_token("hbj", ttl=timedelta(hours=1))
    topic = f"blockhub-test/{uuid.uuid4().hex[:8]}/aq"
    hub.sources.sources.add_profile(
        "gy_hbj",
        "broker",
        "mqtt",
        protected=hub.sources.protected,
        settings={"host": "127.0.0.1", "port": broker.port, "topic_prefix": topic},
    )
    hub.store.register_dataset(
        parse_manifest(
            manifest_dict(
                id="aq_live",
                agency="gy_hbj",
                columns=COLUMNS,
                primary_key=[],
                block_keys=[],
                source={
                    "connector": "mqtt",
                    "profile": "broker",
                    "options": {
                        "topics": ["#"],  # under the profile's topic_prefix
                        "qos": 1,
                        "flush_rows": 1000,
                        "flush_seconds": 3600,
                    },
                },
            )
        )
    )
    port = free_port()
    try:
        with serving(hub, port):
            world = FeedWorld(hub, f"127.0.0.1:{port}", token, broker, bus)
            world.topic = topic
            deadline = time.monotonic() + 30
            while not world.status().get("mqtt_connected"):
                assert time.monotonic() < deadline, world.status()
                time.sleep(0.1)
            yield world
    finally:
        hub.close()
        broker.stop()
        bus.stop(kill=True)


def test_a_broker_outage_mid_feed_loses_nothing(feed: FeedWorld) -> None:
    station = Publisher(feed.broker.port, f"{feed.topic}/GYAQ01")
    try:
        station.send(0, 100)
        station.wait_all()
        assert feed.wait_logged(100) == list(range(100))
        feed.broker.stop()  # the broker goes away (and saves its sessions)
        deadline = time.monotonic() + 10
        while feed.status().get("mqtt_connected"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        station.send(100, 100)  # queued by the station while the broker is down
        time.sleep(1.0)
        feed.broker.start()
        station.send(200, 100)
        station.wait_all()
        got = feed.wait_logged(300)
        deadline = time.monotonic() + 60
        while set(got) != set(range(300)) and time.monotonic() < deadline:
            time.sleep(0.2)
            got = feed.logged()
        assert set(got) == set(range(300)), sorted(set(range(300)) - set(got))  # none lost
        assert feed.status()["mqtt_connected"] is True
    finally:
        station.close()


def test_an_event_log_outage_during_mqtt_intake_drops_nothing(feed: FeedWorld) -> None:
    station = Publisher(feed.broker.port, f"{feed.topic}/GYAQ01")
    try:
        station.send(0, 20)
        assert feed.wait_logged(20) == list(range(20))
        feed.bus.stop()  # the log goes away: the hub cannot keep what arrives now
        station.send(20, 30)
        station.wait_all()  # the broker has them (PUBACK to the station)
        time.sleep(4.0)  # longer than any fixed number of quick retries
        accepted_during = feed.status()["accepted"]
        assert accepted_during == 20  # nothing was taken as kept
        feed.bus.start()
        got = feed.wait_logged(50)
        time.sleep(1.0)
        got = feed.logged()
        assert got == list(range(50)), got  # all of them, once, in order
        assert feed.status()["accepted"] == 50
    finally:
        station.close()


def test_the_hub_redelivers_from_the_broker_what_it_had_not_kept_when_stopped(
    tmp_path: Path,
) -> None:
    """Stopping while the log is down leaves messages unacknowledged, with the broker: the
    next start of the feed gets them (persistent session), so even a shutdown mid-outage
    drops nothing."""
    from connectors.mqtt import MqttSubscriber

    broker = PrivateMosquitto(tmp_path / "mosquitto").start()
    from redis.exceptions import ConnectionError as RedisDown

    kept: list[bytes] = []
    down = threading.Event()
    down.set()

    def on_batch_redis(messages: list[tuple[str, bytes]]) -> None:
        if down.is_set():
            raise RedisDown("the event log is down")
        kept.extend(p for _t, p in messages)

    topic = f"blockhub-test/{uuid.uuid4().hex[:8]}"
    client_id = f"hub-{uuid.uuid4().hex[:8]}"

    def subscriber() -> MqttSubscriber:
        return MqttSubscriber(
            host="127.0.0.1",
            port=broker.port,
            topics=[f"{topic}/#"],
            qos=1,
            client_id=client_id,
            on_batch=on_batch_redis,
        )

    try:
        sub = subscriber()
        sub.start()
        station = Publisher(broker.port, f"{topic}/s")
        station.send(0, 10)
        station.wait_all()
        time.sleep(3.0)  # longer than a few quick retries
        sub.stop()  # stops while nothing could be kept: nothing acknowledged
        assert kept == []
        down.clear()
        sub = subscriber()
        sub.start()
        deadline = time.monotonic() + 20
        while len(kept) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        sub.stop()
        station.close()
        assert sorted(orjson.loads(p)["seq"] for p in kept) == list(range(10))
    finally:
        broker.stop()
