"""A Redis that restarts, is flushed or loses writes under a live stream (real servers).

The hub serves a real websocket subscriber (real uvicorn) from a private redis-server
while another writer (a separate log client, as another process would be) publishes a
numbered stream; mid-stream the Redis is restarted without its data, flushed, or killed
and restarted from an older snapshot.  For every event the subscriber must either have
received it, once and in order, or have been told ``epoch_changed`` for the history it
lost — never a silent gap — and afterwards the hub, the subscriber and Redis agree on the
new epoch.  A restart that keeps the data (AOF) must change nothing: no epoch change, no
loss.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from eventlog.redislog import RedisEventLog
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.client import HubClient
from hub.settings import Settings
from tests.private_services import PrivateRedis
from tests.wsclient import WS

N = 600


@dataclass
class Served:
    hub: Hub
    base: str
    token: str
    redis: PrivateRedis


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    persist = getattr(request, "param", "none")
    server = PrivateRedis(tmp_path / "redis", persist=persist).start()
    settings = Settings(home=tmp_path / "home", events_url=server.url(), bus_poll_s=0.05)
    hub = Hub.open(settings)
    hub.store.identity.upsert_agency("gy_dsj", "大数据局")
    hub.store.identity.create_principal("op", "gy_dsj", "op", "operator")
    token = hub.store.identity.issue_token("op", ttl=timedelta(hours=1))
    port = free_port()
    try:
        with serving(hub, port):
            yield Served(hub, f"127.0.0.1:{port}", token, server)
    finally:
        hub.close()
        server.stop(kill=True)


@dataclass
class Writer:
    """Publishes ``alerts`` events 0..n-1 from its own log client, each retried until the
    log takes it (as the outbox does), recording the epoch and offset it got."""

    url: str
    n: int = N
    got: dict[int, tuple[str, int]] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    pause: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        log = RedisEventLog(self.url)
        run = uuid.uuid4().hex[:8]
        try:
            for i in range(self.n):
                while self.pause.is_set():
                    time.sleep(0.01)
                deadline = time.monotonic() + 30
                while True:
                    try:
                        # With an event id, as the outbox appends: a retry of an append whose
                        # reply was lost returns the first one instead of appending again.
                        m = log.append("alerts", "e", {"i": i}, event_id=f"{run}-{i}")
                        break
                    except (redis.ConnectionError, redis.TimeoutError):
                        assert time.monotonic() < deadline, "the log never came back"
                        time.sleep(0.05)
                self.got[i] = (m.epoch, m.offset)
                if i % 20 == 0:
                    time.sleep(0.01)  # a stream that lasts a while
        finally:
            log.dispose()
            self.done.set()


def read_stream(ws: WS, until: int, timeout: float = 60) -> list[dict[str, Any]]:
    """Every frame but heartbeats, until the event numbered ``until`` arrives."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        frames.append(f)
        if f["type"] == "message" and f["data"]["i"] == until:
            return frames
    raise AssertionError(f"event {until} never arrived; last frames: {frames[-5:]}")


def check_told_or_received(frames: list[dict[str, Any]], writer: Writer, first: str) -> str:
    """Every event was received once, in order, or lost with an epoch the subscriber was
    told had ended.  Returns the last epoch the subscriber was told of."""
    epoch = first
    last_offset = {first: 0}
    received: set[tuple[str, int]] = set()  # (epoch, offset) of every message received
    seen: dict[str, set[int]] = {first: set()}  # events received, per epoch
    told: list[tuple[str, str]] = []
    for f in frames:
        if f["type"] == "epoch_changed":
            assert f["channel"] == "alerts" and f["previous_epoch"] == epoch, f
            told.append((epoch, f["epoch"]))
            epoch = f["epoch"]
            last_offset[epoch] = 0
            seen[epoch] = set()
        elif f["type"] == "message":
            assert f["epoch"] == epoch, f"a message of {f['epoch']} after moving to {epoch}"
            assert f["offset"] == last_offset[epoch] + 1, (f, last_offset)  # no gap, no repeat
            last_offset[epoch] = f["offset"]
            i = f["data"]["i"]
            assert i not in seen[epoch], f"event {i} delivered twice in {epoch}"
            seen[epoch].add(i)
            received.add((epoch, f["offset"]))
        else:
            assert f["type"] == "pong", f  # no history_gap expected here
    ended = {old for old, _new in told}
    for i, (e, offset) in writer.got.items():
        if (e, offset) in received:
            continue
        # Not received: only allowed for history of an epoch the subscriber was told had
        # ended, beyond what it had received of that epoch.  (An append made again in the
        # new epoch, after its reply was lost with the old one, arrives in both: allowed,
        # the subscriber was told in between.)
        assert e in ended, f"event {i} ({e}@{offset}) silently lost"
        assert offset > last_offset[e], f"event {i} ({e}@{offset}) skipped inside {e}"
    return epoch


def current_epoch(server: PrivateRedis) -> str:
    v = server.client().get("bh:epoch")
    assert v is not None
    return str(v.decode())


@pytest.mark.parametrize("how", ["restart_empty", "flushall", "restart_older_snapshot"])
def test_redis_losing_the_log_mid_stream_is_announced_never_silent(
    served: Served, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hub.live.bus")
    hub, server = served.hub, served.redis
    if how == "restart_older_snapshot":
        server.persist = "rdb"
    ws = WS(served.base, served.token)
    first = ws.welcome["epoch"]
    assert ws.subscribe("alerts")["type"] == "subscribed"
    writer = Writer(server.url())
    threading.Thread(target=writer.run, daemon=True).start()
    frames = read_stream(ws, until=N // 3)
    if how == "restart_empty":
        server.restart(down_s=0.5)
    elif how == "flushall":
        server.client().flushall()
    else:
        # A snapshot now, more writes the hub reads, then a crash: the restarted server
        # holds the snapshot — same epoch key, fewer messages, seqs to be given again.
        server.snapshot()
        frames += read_stream(ws, until=N // 3 + 40)
        writer.pause.set()
        server.restart(kill=True)
        # Write past the hub's position quickly, so the same seqs hold other messages.
        pusher = RedisEventLog(server.url())
        for k in range(80):
            pusher.append("other", "e", {"k": k})
        pusher.dispose()
        writer.pause.clear()
    # The hub stays responsive while it finds out and reconnects.
    t0 = time.monotonic()
    assert httpx.get(f"http://{served.base}/healthz", timeout=5).status_code == 200
    assert time.monotonic() - t0 < 3.0  # not held up by the outage (a loaded box is slow)
    frames += read_stream(ws, until=N - 1)
    assert writer.done.wait(30)
    told = check_told_or_received(frames, writer, first)
    new = current_epoch(server)
    assert told == new != first  # the subscriber was moved to the new epoch
    assert hub.bus.epoch == new and hub.log.epoch == new  # and so was the hub
    fresh = WS(served.base, served.token)
    assert fresh.welcome["epoch"] == new
    # A reconnect with the old epoch is told too, and replays the new epoch from its start.
    late = WS(served.base, served.token)
    late.send({"op": "subscribe", "channel": "alerts", "since": 3, "epoch": first})
    notice = late.recv()
    assert notice == {
        "type": "epoch_changed",
        "channel": "alerts",
        "epoch": new,
        "requested_epoch": first,
    }
    # The outage was logged once or twice, not once per retry.
    lines = [r.getMessage() for r in caplog.records if r.name == "hub.live.bus"]
    assert sum("unavailable" in m for m in lines) <= 3, lines
    assert any("started over" in m for m in lines), lines
    for c in (ws, fresh, late):
        c.close()


@pytest.mark.parametrize("served", ["aof"], indirect=True)
def test_a_redis_restart_that_keeps_its_data_changes_nothing(served: Served) -> None:
    """With the log on disk (AOF fsynced per write), a restart mid-stream is a pause: the
    same epoch, every event once, in order, no notice."""
    ws = WS(served.base, served.token)
    first = ws.welcome["epoch"]
    ws.subscribe("alerts")
    writer = Writer(served.redis.url())
    threading.Thread(target=writer.run, daemon=True).start()
    frames = read_stream(ws, until=N // 3)
    served.redis.restart(down_s=0.5)
    frames += read_stream(ws, until=N - 1)
    assert writer.done.wait(30)
    assert [f["type"] for f in frames] == ["message"] * N
    assert [f["data"]["i"] for f in frames] == list(range(N))  # each once, in order
    assert [f["offset"] for f in frames] == list(range(1, N + 1))
    assert {f["epoch"] for f in frames} == {first} == {current_epoch(served.redis)}
    assert served.hub.bus.epoch == first
    ws.close()


def test_the_python_client_hands_out_the_new_epoch_after_a_flush(served: Served) -> None:
    """hub.client.HubClient drops offsets it has handed out before; after ``epoch_changed``
    the offsets start again, and those messages are new ones, not repeats."""

    async def scenario() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        log = RedisEventLog(served.redis.url())
        async with HubClient(f"ws://{served.base}/v1/ws", served.token) as client:
            await client.subscribe("orders:gy_dsj")
            await asyncio.sleep(0.2)
            for i in range(5):
                log.append("orders:gy_dsj", "order.note", {"i": i})
            async for frame in client:
                out.append(frame)
                if frame["type"] == "message" and frame["data"]["i"] == 4:
                    break
            served.redis.client().flushall()
            for i in range(5, 8):
                await asyncio.to_thread(log.append, "orders:gy_dsj", "order.note", {"i": i})
            async for frame in client:
                out.append(frame)
                if frame["type"] == "message" and frame["data"]["i"] == 7:
                    break
        log.dispose()
        return out

    frames = asyncio.run(asyncio.wait_for(scenario(), 60))
    kinds = [(f["type"], f.get("offset"), f.get("data", {}).get("i")) for f in frames]
    assert kinds == [
        ("message", 1, 0),
        ("message", 2, 1),
        ("message", 3, 2),
        ("message", 4, 3),
        ("message", 5, 4),
        ("epoch_changed", None, None),
        ("message", 1, 5),
        ("message", 2, 6),
        ("message", 3, 7),
    ]


def test_a_hub_started_while_redis_is_down_waits_for_it(tmp_path: Path) -> None:
    """Websocket clients are told to come back (1013) until the log is there; then the
    hub serves as usual, with no restart."""
    server = PrivateRedis(tmp_path / "redis")
    settings = Settings(home=tmp_path / "home", events_url=server.url(), bus_poll_s=0.05)
    hub = Hub.open(settings)  # opening the log does not need the server
    hub.store.identity.upsert_agency("gy_dsj", "大数据局")
    hub.store.identity.create_principal("op", "gy_dsj", "op", "operator")
    token = hub.store.identity.issue_token("op", ttl=timedelta(hours=1))
    port = free_port()
    from websockets.sync.client import connect

    try:
        with serving(hub, port):
            with connect(f"ws://127.0.0.1:{port}/v1/ws", open_timeout=10) as c:
                refused = json.loads(c.recv(10))
                assert refused["status"] == 503 and refused["code"] == "service_unavailable"
                assert refused["detail"]["service"] == "event log"
                with pytest.raises(Exception) as closed:
                    c.recv(10)
                assert getattr(closed.value, "rcvd", None) is not None
                assert closed.value.rcvd.code == 1013  # type: ignore[attr-defined]
            server.start()
            deadline = time.monotonic() + 20
            while not hub.bus.ready and time.monotonic() < deadline:
                time.sleep(0.05)
            ws = WS(f"127.0.0.1:{port}", token)
            ws.subscribe("alerts")
            hub.bus.publish("alerts", "e", {"i": 1})
            assert ws.messages(1)[0]["data"] == {"i": 1}
            ws.close()
    finally:
        hub.close()
        server.stop(kill=True)


def test_verify_finds_a_restart_that_gave_the_same_seqs_to_other_messages(
    tmp_path: Path,
) -> None:
    """A server back from an older snapshot keeps the epoch key; once enough is appended
    the seq counter is past the reader's again, so only the entry it read last tells."""
    server = PrivateRedis(tmp_path / "redis", persist="rdb").start()
    reader, writer = RedisEventLog(server.url()), RedisEventLog(server.url())
    try:
        for i in range(10):
            writer.append("a", "e", {"i": i})
        server.snapshot()
        for i in range(10, 20):
            writer.append("a", "e", {"i": i})
        epoch = reader.epoch
        assert [m.seq for m in reader.tail(0, 1000)] == list(range(1, 21))
        assert reader.verify(20, epoch) == epoch  # the same server, the same log
        server.restart(kill=True)  # back to the snapshot: seq 10
        for i in range(15):
            writer.append("b", "e", {"i": i})  # seqs 11..25: 20 is another message now
        assert writer.last_seq() == 25 and writer.epoch == epoch
        new = reader.verify(20, epoch)
        assert new != epoch and current_epoch(server) == new
        # The new epoch starts empty: no offset of the old one is reused for other messages.
        assert writer.last_seq() == 0 and writer.head("a") == 0 and writer.head("b") == 0
        assert writer.append("a", "e", {"i": 0}).offset == 1
        assert writer.epoch == new
    finally:
        reader.dispose()
        writer.dispose()
        server.stop(kill=True)
