"""Recovery with real servers and real clients: a forced disconnect mid-stream, a hub
process killed and restarted, retention announced as a gap, a slow reader that does not
delay a fast one, and two hub processes sharing one Redis Streams log."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventlog.backend import open_event_log
from eventlog.redislog import RedisEventLog
from eventlog.sqllog import EventLog
from hub.api.server import free_port
from hub.assembly.context import Hub
from hub.live.ops import apply_retention
from hub.settings import Settings
from tests.replica_stack import start_serving
from tests.wsclient import WS

BLOCKHUB = str(Path(sys.executable).with_name("blockhub"))


def collect(ws: WS, seen: list[int], until: int, timeout: float = 20) -> None:
    """Read messages into ``seen`` (offsets) until the last offset is ``until``."""
    deadline = time.monotonic() + timeout
    while (not seen or seen[-1] < until) and time.monotonic() < deadline:
        seen.append(ws.messages(1)[0]["offset"])


def reconnect(base: str, token: str, channel: str, seen: list[int], epoch: str) -> WS:
    ws = WS(base, token)
    r = ws.subscribe(channel, since=seen[-1] if seen else 0, epoch=epoch)
    assert r["type"] == "subscribed", r
    return ws


def test_forced_disconnect_mid_stream_loses_nothing(
    live: str, hub: Hub, tokens: dict[str, str]
) -> None:
    n = 3000
    done = threading.Event()

    def publish() -> None:
        for i in range(n):
            hub.bus.publish("alerts", "e", {"i": i})
            if i % 100 == 0:
                time.sleep(0.01)  # a stream that lasts a while
        done.set()

    ws = WS(live, tokens["operator"])
    ws.subscribe("alerts", since=0)
    threading.Thread(target=publish, daemon=True).start()
    seen: list[int] = []
    for cut in (400, 1200, 2100):
        while not seen or seen[-1] < cut:
            seen.append(ws.messages(1)[0]["offset"])
        # Abort the TCP connection under the client: no close frame, buffered data lost.
        ws.conn.socket.shutdown(socket.SHUT_RDWR)
        ws.conn.socket.close()
        ws = reconnect(live, tokens["operator"], "alerts", seen, hub.log.epoch)
    collect(ws, seen, n)
    assert done.wait(20)
    assert seen == list(range(1, n + 1))  # nothing lost, duplicated or reordered
    ws.close()


@pytest.fixture
def retained_settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        bus_poll_s=0.05,
        events_retention={"feed:": {"keep_last": 5}, "alerts": {"keep_s": 3600}},
    )


def test_retention_per_channel_prefix_is_announced(
    live: str, hub: Hub, tokens: dict[str, str], make_feed: Any
) -> None:
    hub.store.register_dataset(make_feed("air", {"seq": "int64"}, agency="gy_hbj"))
    hub.settings.events_retention = {"feed:": {"keep_last": 5}}
    for i in range(12):
        hub.bus.publish("feed:air", "feed.event", {"seq": i})
        hub.bus.publish("alerts", "e", {"i": i})
    assert apply_retention(hub) == 7  # feed trimmed to 5, alerts kept (default retention)
    assert hub.log.first_retained("alerts") == 1
    ws = WS(live, tokens["operator"])
    ws.subscribe("feed:air", since=3)
    gap = ws.reply()
    assert gap == {
        "type": "history_gap",
        "channel": "feed:air",
        "requested_after": 3,
        "first_available": 8,
    }
    assert [m["offset"] for m in ws.messages(5)] == [8, 9, 10, 11, 12]
    ws.close()


def test_slow_reader_does_not_delay_a_fast_one(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home", bus_poll_s=0.05, ws_queue_size=200, ws_send_buffer_bytes=1 << 20
    )
    h = Hub.open(settings)
    h.store.identity.upsert_agency("gy_dsj", "大数据局")
    h.store.identity.create_principal("op", "gy_dsj", "op", "operator")
    token = h.store.identity.issue_token("op")
    from hub.api.server import serving

    port = free_port()
    with serving(h, port):
        base = f"127.0.0.1:{port}"
        # The slow reader: a raw socket that upgrades, subscribes, then never reads.
        slow = raw_ws(port, token, {"op": "subscribe", "channel": "alerts"})
        fast = WS(base, token)
        fast.subscribe("alerts")
        pad = "x" * 8000  # 1,200 x 8 kB: more than the socket buffers plus the send queue
        lat = []
        for i in range(1200):
            t0 = time.perf_counter()
            h.bus.publish("alerts", "e", {"i": i, "pad": pad})
            m = fast.messages(1)[0]
            lat.append(time.perf_counter() - t0)
            assert m["data"]["i"] == i
        lat.sort()
        assert lat[int(len(lat) * 0.99)] < 0.25, lat[-10:]
        # the slow reader was cut off with 4008 rather than being waited for
        assert close_code(slow) == 4008
        assert h.bus.subscribers("alerts") == 1
        fast.close()
    h.close()


def raw_ws(port: int, token: str, first: dict[str, Any], rcvbuf: int = 4096) -> socket.socket:
    """A websocket client that does only what is needed to subscribe, by hand."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: small window
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:  # the upgrade answer first, then speak websocket
        head += sock.recv(1)
    payload = json.dumps(first).encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    frame = bytes([0x81, 0x80 | len(payload)]) + mask
    frame += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(frame)
    return sock


def split_frames(data: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete server frames at the start of ``data``: [(opcode, payload)], bytes used."""
    out, i = [], 0
    while len(data) - i >= 2:
        op, n, h = data[i] & 0x0F, data[i + 1] & 0x7F, 2
        if n == 126:
            n, h = int.from_bytes(data[i + 2 : i + 4], "big"), 4
        elif n == 127:
            n, h = int.from_bytes(data[i + 2 : i + 10], "big"), 10
        if len(data) - i < h + n:
            break
        out.append((op, bytes(data[i + h : i + h + n])))
        i += h + n
    return out, i


def close_code(sock: socket.socket) -> int | None:
    """Read everything the server sent until it closed; the close frame's code."""
    sock.settimeout(30)
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
        if b"\x88" in data[-64:]:  # a close frame at the end: no need to wait for EOF
            break
    frames, _ = split_frames(data)
    closes = [i for i, (op, _) in enumerate(frames) if op == 0x8]
    if not closes:
        return None
    assert closes[0] == len(frames) - 1, "frames after the close frame"  # RFC 6455 5.5.1
    return int.from_bytes(frames[-1][1][:2], "big")


def test_a_client_closing_mid_stream_gets_nothing_after_the_close(tmp_path: Path) -> None:
    """A client closes while messages stream to it: the hub answers with its close frame
    and writes nothing after it, and the subscribers that stay get every message."""
    h = Hub.open(Settings(home=tmp_path / "home", bus_poll_s=0.05))
    h.store.identity.upsert_agency("gy_dsj", "大数据局")
    h.store.identity.create_principal("op", "gy_dsj", "op", "operator")
    token = h.store.identity.issue_token("op")
    from hub.api.server import serving

    port = free_port()
    with serving(h, port):
        closer = raw_ws(port, token, {"op": "subscribe", "channel": "alerts"}, rcvbuf=1 << 16)
        stays = WS(f"127.0.0.1:{port}", token)
        stays.subscribe("alerts")
        data = bytearray()
        while b'"subscribed"' not in data:
            data += closer.recv(1 << 16)
        total, published = 600, threading.Event()

        def publish() -> None:
            for i in range(total):
                h.bus.publish("alerts", "e", {"i": i})
                if i % 20 == 0:
                    time.sleep(0.002)
            published.set()

        threading.Thread(target=publish, daemon=True).start()
        while data.count(b'"type":"message"') < 20:  # mid-stream
            data += closer.recv(1 << 16)
        mask = os.urandom(4)
        body = (1000).to_bytes(2, "big")
        closer.sendall(
            bytes([0x88, 0x80 | len(body)])
            + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(body))
        )
        closer.settimeout(10)
        while chunk := closer.recv(1 << 16):
            data += chunk
        frames, _ = split_frames(data)
        ops = [op for op, _ in frames]
        assert ops[-1] == 0x8 and ops.count(0x8) == 1, ops[-5:]  # nothing after the close
        got = [m["data"]["i"] for m in stays.messages(total, timeout=30)]
        assert got == list(range(total))
        assert published.wait(10)
        deadline = time.monotonic() + 10
        while h.bus.subscribers("alerts") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert h.bus.subscribers("alerts") == 1
        stays.close()
    h.close()


# -- separate hub processes -----------------------------------------------------------


class Proc:
    def __init__(self, home: Path, port: int, env: dict[str, str]) -> None:
        self.home, self.port, self.env = home, port, env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home.parent / f"serve-{self.port}.log"

    def start(self) -> Proc:
        args = [BLOCKHUB, "--home", str(self.home), "serve", "--port", str(self.port)]
        self.proc = start_serving(args, {**os.environ, **self.env}, self.base, self.log_path)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def prepare_home(home: Path, events_url: str | None = None) -> str:
    """A home with an operator and its token (and the agency orders go to)."""
    s = Settings(home=home, events_url=events_url)
    h = Hub.open(s)
    h.store.identity.upsert_agency("gy_dsj", "大数据局")
    h.store.identity.upsert_agency("gy_hbj", "生态环境局")
    h.store.identity.create_principal("op", "gy_dsj", "op", "operator")
    token = h.store.identity.issue_token("op", ttl=timedelta(hours=1))
    h.close()
    return token


def test_hub_restart_loses_nothing(tmp_path: Path, procs: list[Proc]) -> None:
    home = tmp_path / "home"
    token = prepare_home(home)
    server = Proc(home, free_port(), {"BLOCKHUB_BUS_POLL_S": "0.05"})
    procs.append(server.start())
    writer = EventLog(f"sqlite:///{home / 'events.db'}")  # another process appending
    ws = WS(server.base, token)
    ws.subscribe("alerts", since=0)
    for i in range(50):
        writer.append("alerts", "e", {"i": i})
    seen: list[int] = []
    collect(ws, seen, 50)
    server.kill()  # SIGKILL: no shutdown hooks run
    for i in range(50, 120):  # published while the hub is down
        writer.append("alerts", "e", {"i": i})
    server.start()
    ws = reconnect(server.base, token, "alerts", seen, writer.epoch)
    for i in range(120, 150):
        writer.append("alerts", "e", {"i": i})
    collect(ws, seen, 150)
    assert seen == list(range(1, 151))
    ws.close()
    writer.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    prefix = f"bhtest-{uuid.uuid4().hex[:10]}"
    url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    yield url
    RedisEventLog(url).delete_all()


def test_redis_log_offsets_stay_contiguous_across_writers(redis_url: str, tmp_path: Path) -> None:
    logs = [RedisEventLog(redis_url) for _ in range(4)]
    assert len({lg.epoch for lg in logs}) == 1

    def write(lg: RedisEventLog) -> None:
        for i in range(100):
            lg.append("feed:x", "feed.event", {"i": i})

    threads = [threading.Thread(target=write, args=(lg,)) for lg in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lg = logs[0]
    assert lg.head("feed:x") == 400
    assert [m.offset for m in lg.read("feed:x", 0, 1000)] == list(range(1, 401))
    assert [m.offset for m in lg.read("feed:x", 395)] == [396, 397, 398, 399, 400]
    assert [m.seq for m in lg.tail(0, 1000)] == list(range(1, 401))
    assert lg.trim("feed:x", keep_last=10) == 390
    assert lg.trim("feed:x", keep_last=1000) == 0  # shorter than its retention: kept whole
    lg.append("short", "e", {})
    hub = Hub.open(Settings(home=tmp_path / "home", events_url=redis_url))
    try:  # the default retention (1,000,000 per channel) over every channel
        assert apply_retention(hub) == 0
    finally:
        hub.close()
    assert lg.first_retained("short") == 1 and lg.first_retained("feed:x") == 391
    assert lg.first_retained("nothing") == 1 and lg.head("nothing") == 0
    assert lg.channels() == ["feed:x", "short"]
    assert lg.append("feed:x", "e", {}).offset == 401
    for x in logs:
        x.dispose()


def test_two_hub_processes_share_one_redis_log(
    tmp_path: Path, procs: list[Proc], redis_url: str
) -> None:
    home = tmp_path / "home"
    token = prepare_home(home, redis_url)
    env = {"BLOCKHUB_EVENTS_URL": redis_url}
    a = Proc(home, free_port(), env).start()
    procs.append(a)
    b = Proc(home, free_port(), env).start()
    procs.append(b)
    on_a, on_b = WS(a.base, token), WS(b.base, token)
    assert on_a.welcome["epoch"] == on_b.welcome["epoch"]
    on_a.subscribe("orders:gy_hbj")
    on_b.subscribe("orders:gy_hbj")
    # A publish through process A's real REST path reaches subscribers of B (and A).
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as c:
        for i in range(5):
            r = c.post(
                f"http://{a.base}/v1/orders", json={"target": "gy_hbj", "instructions": f"#{i}"}
            )
            assert r.status_code == 201
        r = c.post(f"http://{b.base}/v1/orders", json={"target": "gy_hbj", "instructions": "#5"})
        assert r.status_code == 201
    got_b = on_b.messages(6)
    got_a = on_a.messages(6)
    assert [m["offset"] for m in got_b] == [1, 2, 3, 4, 5, 6]
    assert [m["data"]["order"]["instructions"] for m in got_b] == [f"#{i}" for i in range(6)]
    assert [m["offset"] for m in got_a] == [1, 2, 3, 4, 5, 6]
    # History is shared: a late subscriber on B replays what A published.
    late = WS(b.base, token)
    late.subscribe("orders:gy_hbj", since=2, epoch=on_a.welcome["epoch"])
    assert [m["offset"] for m in late.messages(4)] == [3, 4, 5, 6]
    # Kill A; B goes on; A restarted serves the full history from Redis.
    a.kill()
    log = open_event_log(redis_url)
    log.append("orders:gy_hbj", "order.note", {"n": 7})
    assert on_b.messages(1)[0]["offset"] == 7
    a.start()
    again = WS(a.base, token)
    again.subscribe("orders:gy_hbj", since=0)
    assert [m["offset"] for m in again.messages(7)] == list(range(1, 8))
    for c in (on_a, on_b, late, again):
        c.close()
    log.dispose()


def test_redis_retention_by_age(redis_url: str) -> None:
    from datetime import UTC, datetime

    lg = RedisEventLog(redis_url)
    for i in range(5):
        lg.append("alerts", "e", {"i": i})
    cut = datetime.now(UTC)
    time.sleep(0.01)
    for i in range(3):
        lg.append("alerts", "e", {"i": i})
    assert lg.trim_before("alerts", cut) == 5
    assert lg.first_retained("alerts") == 6
    assert [m.offset for m in lg.read("alerts", 0)] == [6, 7, 8]
    lg.dispose()


def test_long_replay_is_paced_by_the_reader_not_refused(tmp_path: Path) -> None:
    """A replay far larger than the send queue and socket bound arrives whole."""
    settings = Settings(
        home=tmp_path / "home", bus_poll_s=0.05, ws_queue_size=100, ws_send_buffer_bytes=64 << 10
    )
    h = Hub.open(settings)
    h.store.identity.upsert_agency("gy_dsj", "大数据局")
    h.store.identity.create_principal("op", "gy_dsj", "op", "operator")
    token = h.store.identity.issue_token("op")
    pad = "y" * 5000
    for i in range(4000):  # ~20 MB of history: more than the socket buffers can absorb
        h.log.append("alerts", "e", {"i": i, "pad": pad})
    from hub.api.server import serving

    port = free_port()
    with serving(h, port):
        # A raw client with a small receive window that reads 64 kB every 10 ms.
        sock = raw_ws(port, token, {"op": "subscribe", "channel": "alerts", "since": 0}, 64 << 10)
        sock.settimeout(10)
        seen: list[int] = []
        buf = bytearray()
        deadline = time.monotonic() + 60
        while len(seen) < 4000 and time.monotonic() < deadline:
            chunk = sock.recv(64 << 10)
            assert chunk, f"closed after {len(seen)} messages: {bytes(buf[-40:])!r}"
            buf += chunk
            frames, used = split_frames(buf)
            del buf[:used]
            for op, payload in frames:
                if op == 9:  # a protocol ping
                    continue
                assert op == 1, (op, payload[:40])
                frame = json.loads(payload)
                if frame["type"] == "message":
                    seen.append(frame["offset"])
            time.sleep(0.01)
        assert seen == list(range(1, 4001))
        sock.close()
    h.close()
