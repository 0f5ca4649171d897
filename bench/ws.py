#!/usr/bin/env python3
"""Websocket fan-out: blockhub's full path against the bare `websockets` floor, same run.

For each case N:R (N subscribers, R messages/s; ``max`` = as fast as the floor goes):

1. the floor: ``bench_ws.py --server websockets`` (../shared/bench) with the same N, rate,
   message size and duration; for ``max``, the floor's achieved publish rate becomes
   blockhub's target rate, so both deliver the same stream;
2. blockhub: a ``blockhub serve`` process (uvicorn, its own event log); N raw-asyncio
   subscribers authenticate with a bearer token and subscribe to ``feed:bench`` through
   ``/v1/ws``; a separate publisher process appends ``feed.event`` messages to the hub's
   event log through the log API a feed intake or CLI ingest uses (SQLite by default, or
   ``--events redis``), stamped with ``"t":<time_ns>``; the hub tails, routes by channel,
   keeps offsets and history, and sends.

Then: a catch-up run (a client that missed 10,000 messages replays them with ``since``; its
rate is compared to the live rate per subscriber), the hub's memory per idle connection, and
how long the N subscribers took to connect (the hub's authenticate and subscribe; the
floor's connect only).
Prints a table with the ratios. Bounded in time and count; everything binds 127.0.0.1.

    .venv/bin/python bench/ws.py --cases 1000:20,1000:max,5000:4 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from array import array
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
PEER = Path(os.environ.get("BENCH_WS_PEER", ROOT.parent / "shared" / "bench" / "bench_ws.py"))
if not PEER.exists():
    PEER = Path("/work/shared/bench/bench_ws.py")
PY = sys.executable
BLOCKHUB = str(Path(PY).with_name("blockhub"))
CHANNEL = "feed:bench"


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_data(seq: int, size: int) -> dict[str, Any]:
    """The floor's ~size-byte record; "t" second, so the frame holds `"t":<ns>,`."""
    d: dict[str, Any] = {"seq": seq, "t": time.time_ns(), "feed": "hotline", "district": "110105"}
    d["category"], d["status"], d["lat"], d["lon"] = "noise", "new", 39.952733, 116.425438
    d["text"] = "x" * max(0, size - 150)
    return d


# ----------------------------------------------------------------------------- clients
class Sub(asyncio.Protocol):
    """Upgrade with a bearer token, subscribe once the 101 is in, count stamped frames."""

    def __init__(self, st: dict[str, Any], req: bytes, sub: bytes, ready: Any, done: Any) -> None:
        self.st, self.req, self.sub, self.ready, self.done = st, req, sub, ready, done
        self.buf, self.hs, self.tr = b"", False, None

    def connection_made(self, tr: Any) -> None:
        self.tr = tr
        tr.write(self.req)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during handshake"))
        if not self.done.done():
            self.done.set_result(False)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self.buf + data if self.buf else data
        if not self.hs:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(buf[:80]))
                self.tr.close()
                return
            self.hs = True
            self.tr.write(self.sub)
            buf = buf[i + 4 :]
        pos, n, lat, cnt = 0, len(buf), self.st["lat"], 0
        while n - pos >= 2:
            b0, ln, h = buf[pos], buf[pos + 1] & 0x7F, 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln, h = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln, h = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            s, e = pos + h, pos + h + ln
            if e > n:
                break
            op = b0 & 0x0F
            if op == 1:
                j = buf.find(b'"t":', s, e)
                if j >= 0:
                    lat.append(now - int(buf[j + 4 : buf.find(b",", j, e)]))
                    cnt += 1
                elif buf.find(b'"subscribed"', s, e) >= 0 and not self.ready.done():
                    self.ready.set_result(True)
                elif buf.find(b'"bench.end"', s, e) >= 0 and not self.done.done():
                    self.done.set_result(True)
            elif op == 9:
                self.tr.write(bytes([0x8A, 0x80 | ln]) + b"\0\0\0\0" + buf[s:e])
            elif op == 8 and not self.done.done():
                self.done.set_result(False)
            pos = e
        self.buf = buf[pos:] if pos < n else b""
        if cnt:
            st = self.st
            st["count"] += cnt
            if st["first"] == 0:
                st["first"] = now
            st["last"] = now


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def run_clients(
    port: int, token: str, n: int, deadline: float, out: str, since: int | None
) -> None:
    loop = asyncio.get_running_loop()
    st: dict[str, Any] = {"lat": array("q"), "count": 0, "first": 0, "last": 0}
    sem = asyncio.Semaphore(256)
    subs = []
    op: dict[str, Any] = {"op": "subscribe", "channel": CHANNEL}
    if since is not None:
        op["since"] = since
    sub = masked_text(json.dumps(op).encode())

    async def one() -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        ready, done = loop.create_future(), loop.create_future()
        async with sem:
            await loop.create_connection(lambda: Sub(st, req, sub, ready, done), "127.0.0.1", port)
            await asyncio.wait_for(ready, 60)
        subs.append(done)

    t0 = time.time()
    await asyncio.gather(*[one() for _ in range(n)])
    print(json.dumps({"ready": len(subs), "connect_s": time.time() - t0}), flush=True)
    await asyncio.wait(subs, timeout=max(1.0, deadline - time.time()))
    with open(out, "wb") as f:
        st["lat"].tofile(f)
    ended = sum(1 for f in subs if f.done() and f.result())
    print(json.dumps({k: st[k] for k in ("count", "first", "last")} | {"ended": ended}), flush=True)


def publish(events_url: str, rate: float, duration: float, size: int) -> dict[str, Any]:
    """Append to the hub's event log at ``rate`` for ``duration`` s, then an end marker."""
    sys.path.insert(0, str(ROOT))
    from eventlog.backend import open_event_log

    log = open_event_log(events_url)
    source = {"agency": "bench", "feed": "bench"}
    start = time.monotonic()
    interval, nxt, i = 1.0 / rate, start, 0
    while True:
        now = time.monotonic()
        if now >= start + duration:
            break
        if now < nxt:
            time.sleep(nxt - now)
            continue
        nxt += interval
        log.append(CHANNEL, "feed.event", make_data(i, size), source)
        i += 1
    elapsed = time.monotonic() - start
    log.append(CHANNEL, "bench.end", {"end": True}, source)
    log.dispose()
    return {"sent": i, "elapsed": elapsed}


# ----------------------------------------------------------------------------- the hub
class Hub:
    def __init__(self, home: Path, events_url: str | None, max_conns: int) -> None:
        self.home, self.port = home, free_port()
        self.events_url = events_url or f"sqlite:///{home / 'events.db'}"
        sys.path.insert(0, str(ROOT))
        from hub.assembly.context import Hub as HubCtx
        from hub.settings import Settings

        h = HubCtx.open(Settings(home=home, events_url=events_url))
        h.store.identity.upsert_agency("bench", "bench")
        h.register_manifests(ROOT / "bench" / "manifests")
        h.store.identity.create_principal("bench", "bench", "bench", "operator")
        self.token = h.store.identity.issue_token("bench", ttl=timedelta(hours=2))
        h.close()
        env = {
            **os.environ,
            "BLOCKHUB_BUS_POLL_S": os.environ.get("BLOCKHUB_BUS_POLL_S", "0.002"),
            "BLOCKHUB_WS_MAX_PER_PRINCIPAL": str(max_conns),
            "BLOCKHUB_WS_QUEUE_SIZE": "100000",
            "BLOCKHUB_WS_DIRECT_WRITE": os.environ.get("BLOCKHUB_WS_DIRECT_WRITE", "1"),
        }
        if events_url:
            env["BLOCKHUB_EVENTS_URL"] = events_url
        self.proc = subprocess.Popen(
            [BLOCKHUB, "--home", str(home), "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("blockhub serve did not start")
        # Measure the steady state: the feed's start-up work (its flush worker spawned, the
        # lake table made and loaded there) done first, as the floor has none (D37).
        while time.time() < deadline:
            if self.feed_status().get("lake_ready"):
                return
            time.sleep(0.2)
        raise RuntimeError("the bench feed's lake table was not made ready within 60 s")

    def feed_status(self) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/feeds/bench",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return dict(json.loads(r.read()))
        except OSError:
            return {}

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def pct(vals: Any, p: float) -> float | None:
    if not len(vals):
        return None
    return float(vals[min(len(vals) - 1, int(p / 100.0 * len(vals)))]) / 1e6


def start_clients(
    hub: Hub, n: int, procs: int, deadline: float, tmp: str, since: int | None = None
) -> list[subprocess.Popen[str]]:
    per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    out = []
    for i, k in enumerate(per):
        if k:
            args = [PY, str(HERE), "_clients", "--port", str(hub.port), "--token", hub.token]
            args += ["--n", str(k), "--deadline", str(deadline), "--out", f"{tmp}/lat{i}.bin"]
            if since is not None:
                args += ["--since", str(since)]
            # Each client process in a session of its own, as the floor harness starts its
            # clients (with autogroup scheduling a session is a CPU-share group).
            out.append(
                subprocess.Popen(args, stdout=subprocess.PIPE, text=True, start_new_session=True)
            )
    return out


def collect(procs: list[subprocess.Popen[str]], tmp: str) -> tuple[int, float, Any]:
    import numpy as np

    outs = []
    for p in procs:
        outs.append(json.loads(p.stdout.readline()))  # type: ignore[union-attr]
        p.wait(60)
    files = [os.path.join(tmp, f) for f in os.listdir(tmp) if f.startswith("lat")]
    lat = np.concatenate([np.fromfile(f, dtype=np.int64) for f in files])
    lat.sort()
    for f in files:
        os.remove(f)
    total = sum(o["count"] for o in outs)
    first = min((o["first"] for o in outs if o["first"]), default=0)
    last = max(o["last"] for o in outs)
    return total, (last - first) / 1e9 if total else 0.0, lat


def run_hub_case(args: Any, n: int, rate: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    events_url = None
    if args.events == "redis":
        events_url = f"redis://127.0.0.1:6379/0?prefix=bench-{uuid.uuid4().hex[:8]}"
    hub = Hub(home, events_url, max_conns=n + 10)
    tmp = tempfile.mkdtemp(prefix="bench-ws-")
    try:
        rss0 = hub.rss_kb()
        deadline = time.time() + 120 + args.duration + 30
        procs = start_clients(hub, n, args.client_procs, deadline, tmp)
        connect_s = max(json.loads(p.stdout.readline())["connect_s"] for p in procs)  # type: ignore[union-attr]
        time.sleep(1.0)
        rss1 = hub.rss_kb()
        st = publish(hub.events_url, rate, args.duration, args.size)
        total, window, lat = collect(procs, tmp)
        expected = st["sent"] * n
        res: dict[str, Any] = {
            "server": "blockhub",
            "n": n,
            "rate": rate,
            "published": st["sent"],
            "publish_rate": round(st["sent"] / st["elapsed"], 1),
            "delivered": total,
            "loss_pct": round(100 * (1 - total / expected), 3) if expected else None,
            "delivered_per_s": round(total / window) if window else None,
            "p50_ms": pct(lat, 50),
            "p99_ms": pct(lat, 99),
            "connect_s": round(connect_s, 2),
            "idle_kb_per_conn": round((rss1 - rss0) / n, 1),
        }
        if args.catchup and n == args.catchup_n:
            res["catchup"] = catch_up(args, hub, tmp, live_rate=rate)
        return res
    finally:
        hub.stop()
        if events_url:
            from eventlog.redislog import RedisEventLog

            RedisEventLog(events_url).delete_all()


def catch_up(args: Any, hub: Hub, tmp: str, live_rate: float) -> dict[str, Any]:
    """A client that missed ``args.catchup`` messages replays them; its msg/s vs live."""
    from eventlog.backend import open_event_log

    log = open_event_log(hub.events_url)
    head = log.head(CHANNEL)
    for i in range(args.catchup):  # published while the client was away
        log.append(CHANNEL, "feed.event", make_data(i, args.size), {"agency": "bench"})
    log.append(CHANNEL, "bench.end", {"end": True}, {})
    log.dispose()
    procs = start_clients(hub, 1, 1, time.time() + 120, tmp, since=head)
    procs[0].stdout.readline()  # type: ignore[union-attr]
    total, window, _ = collect(procs, tmp)
    return {
        "missed": args.catchup,
        "received": total,
        "catchup_msg_per_s": round(total / window) if window else None,
        "live_msg_per_s_per_client": live_rate,
    }


def run_floor(args: Any, n: int, rate: int) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="bench-floor-")) / "floor.json"
    cmd = [PY, str(PEER), "--server", "websockets", "--cases", f"{n}:{rate or 'max'}"]
    cmd += ["--duration", str(args.duration), "--size", str(args.size)]
    cmd += ["--client-procs", str(args.client_procs), "--json-out", str(out)]
    cmd += ["--port", str(free_port())]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            return dict(json.loads(line))
    raise RuntimeError(f"floor run failed: {res.stderr[-500:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cmd", nargs="?", default="run", choices=["run", "_clients"])
    ap.add_argument("--cases", default="1000:20,1000:max,5000:4")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--client-procs", type=int, default=1)
    ap.add_argument("--events", choices=["sqlite", "redis"], default="sqlite")
    ap.add_argument("--catchup", type=int, default=10_000, help="missed messages (0: skip)")
    ap.add_argument("--catchup-n", type=int, default=1000, help="in the case with this N")
    ap.add_argument("--json-out", default=None)
    # _clients
    ap.add_argument("--port", type=int)
    ap.add_argument("--token")
    ap.add_argument("--n", type=int)
    ap.add_argument("--deadline", type=float)
    ap.add_argument("--out")
    ap.add_argument("--since", type=int, default=None)
    args = ap.parse_args()
    raise_nofile()
    if args.cmd == "_clients":
        import uvloop

        uvloop.run(run_clients(args.port, args.token, args.n, args.deadline, args.out, args.since))
        return
    args.duration = min(args.duration, 20.0)
    rows = []
    for case in args.cases.split(","):
        n_s, r = case.split(":")
        n = int(n_s)
        floor = run_floor(args, n, 0 if r == "max" else int(r))
        print(json.dumps(floor), flush=True)
        rate = float(floor["publish_rate"]) if r == "max" else float(r)
        mine = run_hub_case(args, n, rate)
        print(json.dumps(mine), flush=True)
        rows.append((r, floor, mine))
    lines = [
        "| N | rate | floor pub/s | floor msg/s | hub msg/s | ratio | floor p99 ms | hub p99 ms"
        " | p99 ratio | hub loss % | hub KiB/idle conn | floor / hub connect s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, f, m in rows:
        ratio = (m["delivered_per_s"] or 0) / (f.get("delivered_per_s") or 1)
        p99r = (m["p99_ms"] or 0) / (f.get("p99_ms") or 1)
        lines.append(
            f"| {m['n']} | {r} | {f.get('publish_rate')} | {f.get('delivered_per_s')} | "
            f"{m['delivered_per_s']} | {ratio:.2f} | {f.get('p99_ms'):.1f} | {m['p99_ms']:.1f} | "
            f"{p99r:.2f} | {m['loss_pct']} | {m['idle_kb_per_conn']} | "
            f"{f.get('connect_s')} / {m['connect_s']} |"
        )
    print("\n".join(lines))
    for _, _, m in rows:
        if "catchup" in m:
            c = m["catchup"]
            print(
                f"catch-up: {c['received']}/{c['missed']} missed messages at "
                f"{c['catchup_msg_per_s']} msg/s "
                f"(live rate per client {c['live_msg_per_s_per_client']})"
            )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([[r, f, m] for r, f, m in rows], indent=1))


if __name__ == "__main__":
    main()
