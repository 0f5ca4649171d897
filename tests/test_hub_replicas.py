"""Several hub replicas on one Redis bus, as real processes behind ``blockhub proxy``.

- A live MQTT feed is consumed once, by the replica holding its lease, not once per
  replica; when that replica is killed (SIGKILL, mid-stream) another takes the feed over
  — the broker hands it the feed's session — and no event is lost.
- A subscriber whose replica is killed mid-stream reconnects through the proxy to another
  replica and replays from its offsets: every message once, in order.
- Leases (Redis and file), the proxy with no replica up, replica ids.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import ValidationError

from catalog.datasets.manifest import parse_manifest
from eventlog.redislog import RedisEventLog
from hub.api.proxy import Proxy
from hub.api.server import free_port
from hub.assembly.context import Hub
from hub.client import HubClient
from hub.live.leases import FileLeases, Leadership, RedisLeases, holder_name, replica_of
from hub.settings import Settings
from tests.conftest import manifest_dict
from tests.private_services import PrivateMosquitto
from tests.replica_stack import Stack, feed_status, redis_bus, wait_for
from tests.test_faults_mqtt import Publisher as Station

__all__ = ["redis_bus"]  # the fixture, imported for pytest

COLUMNS = [{"name": "seq", "type": "int64"}, {"name": "station_id", "type": "string"}]
LEASE_S = 2.0


def stack_env(home: Path, events_url: str) -> dict[str, str]:
    return {
        "BLOCKHUB_HOME": str(home),
        "BLOCKHUB_EVENTS_URL": events_url,
        "BLOCKHUB_BUS_POLL_S": "0.05",
        "BLOCKHUB_FEED_LEASE_S": str(LEASE_S),
        "BLOCKHUB_FEED_FLUSH": "thread",  # one process per replica: the test counts them
        "BLOCKHUB_LOG_LEVEL": "INFO",
    }


def prepare(home: Path, events_url: str, *, broker_port: int | None = None) -> tuple[str, str]:
    """A home with a steward of the environment bureau and its token, and a feed: MQTT on
    a broker (topic returned) or HTTP push."""
    hub = Hub.open(Settings(home=home, events_url=events_url))
    try:
        hub.store.identity.upsert_agency("gy_hbj", "生态环境局")
        hub.store.identity.create_principal("hbj", "gy_hbj", "hbj", "steward")
        token = hub.store.identity.issue_token("hbj", ttl=timedelta(hours=1))
        topic = f"blockhub-test/{uuid.uuid4().hex[:8]}/aq"
        if broker_port is None:
            source: dict[str, Any] = {"connector": "push", "options": {}}
        else:
            hub.sources.sources.add_profile(
                "gy_hbj",
                "broker",
                "mqtt",
                protected=hub.sources.protected,
                settings={"host": "127.0.0.1", "port": broker_port, "topic_prefix": topic},
            )
            source = {
                "connector": "mqtt",
                "profile": "broker",
                "options": {"topics": ["#"], "qos": 1, "flush_rows": 100, "flush_seconds": 1},
            }
        hub.store.register_dataset(
            parse_manifest(
                manifest_dict(
                    id="aq_live",
                    agency="gy_hbj",
                    columns=COLUMNS,
                    primary_key=[],
                    block_keys=[],
                    source=source,
                )
            )
        )
        return token, topic
    finally:
        hub.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, {})
    yield s
    s.close()


def logged_seqs(events_url: str) -> list[int]:
    log = RedisEventLog(events_url)
    try:
        return [m.data["seq"] for m in log.read("feed:aq_live", 0, 100_000)]
    finally:
        log.dispose()


def test_a_feed_is_consumed_once_and_taken_over_when_its_leader_dies(
    tmp_path: Path, stack: Stack, redis_bus: str
) -> None:
    broker = PrivateMosquitto(tmp_path / "mosquitto").start()
    station: Station | None = None
    try:
        home = tmp_path / "home"
        token, topic = prepare(home, redis_bus, broker_port=broker.port)
        stack.env.update(stack_env(home, redis_bus))
        stack.start(["ra", "rb"])
        ra, rb = stack.replicas

        # One leader, and both replicas name the same one.
        def leader() -> str | None:
            a, b = (feed_status(r.base, token, "aq_live") for r in (ra, rb))
            if a["leader"] == b["leader"] or a["leader_replica"] != b["leader_replica"]:
                return None
            return str(a["leader_replica"])

        first = wait_for(leader, "one replica leads the feed")
        lead, other = (ra, rb) if first == "ra" else (rb, ra)
        assert feed_status(lead.base, token, "aq_live")["mqtt_connected"] is True
        assert feed_status(other.base, token, "aq_live")["mqtt_connected"] is None

        # Each replica's Redis connections carry its id.
        names = {c["name"] for c in redis.Redis(port=6379).client_list()}
        assert {"blockhub:ra:tail", "blockhub:rb:tail"} <= names

        station = Station(broker.port, f"{topic}/GYAQ01")
        station.send(0, 100)
        got = wait_for(lambda: len(logged_seqs(redis_bus)) >= 100 and logged_seqs(redis_bus), "100")
        # Consumed once: two consuming replicas would have logged each event twice.
        assert sorted(got) == list(range(100))

        # The leader dies mid-stream: events keep coming while nobody consumes them.
        done = threading.Event()

        def stream() -> None:
            assert station is not None
            for k in range(10):
                station.send(100 + 20 * k, 20)
                time.sleep(0.1)
            done.set()

        feeder = threading.Thread(target=stream, daemon=True)
        feeder.start()
        time.sleep(0.3)
        killed_at = time.monotonic()
        lead.kill()
        feeder.join(10)
        assert done.is_set()

        # The other replica takes the lease once it runs out, and the broker's session.
        taken = wait_for(
            lambda: feed_status(other.base, token, "aq_live")["leader"], "takeover", 20
        )
        took_s = time.monotonic() - killed_at
        assert taken and took_s < LEASE_S * 3 + 5, took_s
        seqs = wait_for(
            lambda: set(logged_seqs(redis_bus)) >= set(range(300)) and logged_seqs(redis_bus),
            "every event logged after the takeover",
        )
        assert set(seqs) == set(range(300))  # nothing lost
        # At least once: events the dead leader logged but had not acknowledged come again;
        # nothing else is duplicated.
        dups = len(seqs) - 300
        assert dups <= 200, dups
        # The new leader flushes the feed to the lake: every event, in the table.
        hub = Hub.open(Settings(home=home, events_url=redis_bus))
        try:

            def flushed() -> bool:
                versions = hub.store.versions("aq_live")
                return bool(versions) and sum(v.rows_added for v in versions) >= len(seqs)

            wait_for(flushed, "the new leader flushes to the lake", 30)
        finally:
            hub.close()
    finally:
        if station is not None:
            station.close()
        broker.stop()


def test_a_subscriber_survives_its_replica_dying_behind_the_proxy(
    tmp_path: Path, stack: Stack, redis_bus: str
) -> None:
    home = tmp_path / "home"
    token, _ = prepare(home, redis_bus)
    stack.env.update(stack_env(home, redis_bus))
    stack.start(["ra", "rb"])
    assert stack.proxy is not None
    n_batches, per_batch = 40, 5
    total = n_batches * per_batch

    async def run() -> tuple[list[int], int, list[str | None]]:
        assert stack.proxy is not None
        client = HubClient(f"ws://{stack.proxy.base}/v1/ws", token, backoff_s=0.05)
        async with client:
            await client.subscribe("feed:aq_live", since=0)
            first_replica = client.replica
            survivor = next(r for r in stack.replicas if r.name != first_replica)
            victim = stack.replica(str(first_replica))

            def push() -> None:
                # Published through the other replica's REST path: the subscriber's replica
                # learns of it from the Redis log.
                with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as c:
                    for b in range(n_batches):
                        events = [
                            {"seq": b * per_batch + i, "station_id": "S"} for i in range(per_batch)
                        ]
                        r = c.post(f"http://{survivor.base}/v1/feeds/aq_live/events", json=events)
                        assert r.status_code == 202, r.text
                        time.sleep(0.03)

            pusher = asyncio.create_task(asyncio.to_thread(push))
            offsets: list[int] = []
            replicas = [first_replica]
            async for frame in client:
                assert frame["type"] == "message", frame
                offsets.append(frame["offset"])
                if len(offsets) == total // 3:
                    victim.kill()  # mid-stream
                if client.replica != replicas[-1]:
                    replicas.append(client.replica)
                if len(offsets) == total:
                    break
            await pusher
            return offsets, client.reconnects, replicas

    offsets, reconnects, replicas = asyncio.run(asyncio.wait_for(run(), 90))
    assert offsets == list(range(1, total + 1))  # once each, in order, none lost
    assert reconnects >= 1
    assert len(replicas) == 2 and replicas[0] != replicas[1]


# -- parts --------------------------------------------------------------------------


def test_redis_leases_one_holder_and_expiry(redis_bus: str) -> None:
    log = RedisEventLog(redis_bus)
    try:
        a = RedisLeases(log.redis, log.prefix, holder_name("ra"), ttl_s=0.5)
        b = RedisLeases(log.redis, log.prefix, holder_name("rb"), ttl_s=0.5)
        assert a.take("feed:x") and a.take("feed:x")  # taken, renewed
        assert not b.take("feed:x")
        assert replica_of(b.holder_of("feed:x")) == "ra"
        b.drop("feed:x")  # not b's: nothing happens
        assert replica_of(a.holder_of("feed:x")) == "ra"
        wait_for(lambda: b.take("feed:x"), "a lease not renewed runs out", 5, 0.05)
        assert not a.take("feed:x")
        b.drop("feed:x")
        assert b.holder_of("feed:x") is None and a.take("feed:x")
        # Two processes given one replica id are still two holders.
        assert not RedisLeases(log.redis, log.prefix, holder_name("ra"), 0.5).take("feed:x")
    finally:
        log.dispose()


def test_a_leader_that_cannot_renew_steps_down_before_its_lease_runs_out() -> None:
    now = [100.0]
    gone = redis.Redis(port=free_port(), socket_connect_timeout=0.2)  # nothing listens
    leases = RedisLeases(gone, "x", holder_name("ra"), ttl_s=3.0)
    lead = Leadership(leases, "feed:x", clock=lambda: now[0])
    lead.held, lead._renewed = True, now[0]
    now[0] += 1.0  # a third of the lease: still held
    assert lead.attempt() is True
    now[0] += 1.1  # past two thirds: stepped down while the lease still runs
    assert lead.attempt() is False


def test_file_leases_free_when_the_holder_closes(tmp_path: Path) -> None:
    a = FileLeases(tmp_path / "leases", holder_name("ra"), 5.0)
    b = FileLeases(tmp_path / "leases", holder_name("rb"), 5.0)
    assert a.take("feed:x") and a.take("feed:x")
    assert not b.take("feed:x")
    assert replica_of(b.holder_of("feed:x")) == "ra"
    a.close()  # what the kernel does when the process dies
    assert b.holder_of("feed:x") is None
    assert b.take("feed:x")
    b.close()


def test_the_proxy_answers_503_with_the_error_body_when_no_replica_is_up() -> None:
    async def run() -> httpx.Response:
        proxy = Proxy([("127.0.0.1", free_port())], down_s=0.1)
        port = await proxy.start("127.0.0.1", 0)
        try:
            async with httpx.AsyncClient() as c:
                return await c.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        finally:
            await proxy.stop()

    r = asyncio.run(run())
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json() == {
        "ok": False,
        "status": 503,
        "code": "service_unavailable",
        "error": "no hub replica can be reached; try again shortly",
        "detail": {"service": "hub"},
    }


def test_replica_ids(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, port=8123)
    assert s.replica.endswith("-8123")
    assert Settings(home=tmp_path, replica_id="hub-a.1").replica == "hub-a.1"
    for bad in ("", "-a", "a b", "a/b", "x" * 64):
        with pytest.raises(ValidationError, match="replica id"):
            Settings(home=tmp_path, replica_id=bad)


def test_the_client_moves_on_along_its_list_of_replicas(
    live: str, hub: Hub, tokens: dict[str, str]
) -> None:
    async def run() -> tuple[str | None, int, str]:
        dead = f"ws://127.0.0.1:{free_port()}/v1/ws"
        client = HubClient([dead, f"ws://{live}/v1/ws"], tokens["operator"], backoff_s=0.05)
        async with client:
            return client.replica, client.reconnects, client.url

    replica, reconnects, url = asyncio.run(asyncio.wait_for(run(), 30))
    assert replica == hub.settings.replica and reconnects == 1 and url.endswith(f"{live}/v1/ws")


def test_alert_rules_run_on_one_replica_and_move_when_it_dies(
    tmp_path: Path, stack: Stack, redis_bus: str
) -> None:
    home = tmp_path / "home"
    token, _ = prepare(home, redis_bus)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - {id: hot, kind: threshold, channel: 'feed:aq_live', field: seq, op: '>',"
        " value: -1, key: [station_id]}\n",
        encoding="utf-8",
    )
    stack.env.update(
        stack_env(home, redis_bus)
        | {"BLOCKHUB_ALERT_RULES": str(rules), "BLOCKHUB_OPS_TICK_S": "0.3"}
    )
    stack.start(["ra", "rb"])
    log = RedisEventLog(redis_bus)

    def engine_at() -> str | None:
        return replica_of((log.redis.get(f"{log.prefix}:lease:ops:alerts") or b"").decode())

    def push(replica: str, first: int, n: int) -> None:
        events = [{"seq": first + i, "station_id": "GYAQ01"} for i in range(n)]
        r = httpx.post(
            f"http://{stack.replica(replica).base}/v1/feeds/aq_live/events",
            json=events,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert r.status_code == 202, r.text

    def count() -> int:
        hub = Hub.open(Settings(home=home, events_url=redis_bus))
        try:
            return sum(a.count for a in hub.ops.list_alerts() if a.rule_id == "hot")
        finally:
            hub.close()

    try:
        lead = wait_for(engine_at, "a replica runs the alert engine")
        other = "rb" if lead == "ra" else "ra"
        push(other, 0, 10)  # pushed through the replica that does not evaluate
        wait_for(lambda: count() >= 10, "10 matching events counted")
        time.sleep(1.0)  # past a tick: the engine's cursor is saved
        assert count() == 10  # once per event, not once per replica
        stack.replica(lead).kill()
        wait_for(lambda: engine_at() == other, "the other replica takes the engine over", 20)
        push(other, 10, 5)
        wait_for(lambda: count() >= 15, "events after the takeover counted")
        time.sleep(1.0)
        assert count() == 15
    finally:
        log.dispose()


def test_the_proxy_skips_a_replica_that_refuses_connections(live: str) -> None:
    host, port = live.split(":")

    async def run() -> list[int]:
        dead = ("127.0.0.1", free_port())
        proxy = Proxy([dead, (host, int(port))], down_s=60)
        at = await proxy.start("127.0.0.1", 0)
        try:
            codes = []
            for _ in range(4):  # a new connection each: every turn, the dead one skipped
                async with httpx.AsyncClient() as c:
                    r = await c.get(f"http://127.0.0.1:{at}/healthz", timeout=10)
                    codes.append(r.status_code)
            return codes
        finally:
            await proxy.stop()

    assert asyncio.run(asyncio.wait_for(run(), 60)) == [200, 200, 200, 200]
