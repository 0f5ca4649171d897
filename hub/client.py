"""A small Python client for ``/v1/ws``: auth, subscriptions, reconnect, replay.

```python
async with HubClient("ws://127.0.0.1:8000/v1/ws", token) as hub:
    await hub.subscribe("orders:unit7")
    await hub.subscribe("feed:air_readings", filter={"district_code": ["520102"]})
    async for frame in hub:
        if frame["type"] == "message":
            ...
```

It remembers the last offset it handed out per channel and the log's epoch; when
the connection drops (or goes silent for three heartbeats) it reconnects with
exponential backoff and re-subscribes every channel with ``since`` = that offset,
so the caller sees every message once, in order.  Given several URLs (the hub's replicas,
when no proxy stands in front of them) it connects to the first and, after each lost
connection, to the next: every replica serves the same channels from the one event log.
Control frames (``history_gap``, ``epoch_changed``, ``ok``, ``error``) are handed out as
they come; heartbeats, pongs and ``subscribed`` are consumed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

log = logging.getLogger(__name__)

FATAL_CLOSE_CODES = {4401: "authentication failed", 4029: "too many connections"}
# Any other close (1013 "try again later" while a server the hub needs is down, 1011, 4008)
# is retried with backoff.


class ClientFatal(Exception):
    """The server refused the client for a reason a reconnect cannot fix."""


class TryAgain(Exception):
    """The server cannot serve right now (503, close code 1013): reconnect with backoff."""


class HubClient:
    def __init__(
        self,
        url: str | Sequence[str],
        token: str,
        *,
        backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        silence_heartbeats: float = 3.0,
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("HubClient needs at least one URL")
        self.token = token
        self.url = self.urls[0]  # the replica of the current (or next) connection
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.silence_heartbeats = silence_heartbeats
        self.channels: dict[str, dict[str, Any] | None] = {}  # channel → filter
        self.last: dict[str, int] = {}
        self.epoch: str | None = None
        self.heartbeat_s = 15.0
        self.reconnects = 0
        self.replica: str | None = None
        self._ws: ClientConnection | None = None
        self._out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._fatal: BaseException | None = None

    async def __aenter__(self) -> HubClient:
        self._runner = asyncio.create_task(self._run(), name="blockhub-client")
        await self._wait_connected()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        if self._ws is not None:
            await self._ws.close()

    async def _wait_connected(self) -> None:
        while not self._connected.is_set():
            if self._fatal is not None:
                raise self._fatal
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), 0.1)

    async def subscribe(
        self, channel: str, *, since: int | None = None, filter: dict[str, Any] | None = None
    ) -> None:
        """Subscribe (live only, or replay after ``since``); kept across reconnects."""
        self.channels[channel] = filter
        if since is not None:
            self.last[channel] = since
        await self._wait_connected()
        await self._send_subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.pop(channel, None)
        self.last.pop(channel, None)
        await self.send({"op": "unsubscribe", "channel": channel})

    async def send(self, op: dict[str, Any]) -> None:
        """Send an op (e.g. ``{"op": "order.ack", "order": id}``); its reply comes through
        the iterator as an ``ok`` or ``error`` frame."""
        await self._wait_connected()
        assert self._ws is not None
        await self._ws.send(json.dumps(op, ensure_ascii=False))

    async def _send_subscribe(self, channel: str) -> None:
        assert self._ws is not None
        msg: dict[str, Any] = {"op": "subscribe", "channel": channel}
        if channel in self.last:
            msg["since"] = self.last[channel]
            msg["epoch"] = self.epoch
        if self.channels.get(channel):
            msg["filter"] = self.channels[channel]
        await self._ws.send(json.dumps(msg))

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            if self._fatal is not None and self._out.empty():
                raise self._fatal
            try:
                yield await asyncio.wait_for(self._out.get(), 0.5)
            except TimeoutError:
                continue

    async def _run(self) -> None:
        delay = self.backoff_s
        while True:
            try:
                async with websockets.connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    max_size=None,
                    open_timeout=10,
                ) as ws:
                    await self._session(ws)
            except ClientFatal as e:
                self._fatal = e
                return
            except (OSError, websockets.WebSocketException, TimeoutError, TryAgain) as e:
                log.info("blockhub connection lost (%r); reconnecting in %.1f s", e, delay)
            finally:
                self._connected.clear()
                self._ws = None
            self.reconnects += 1
            self.url = self.urls[self.reconnects % len(self.urls)]
            await asyncio.sleep(delay * (0.5 + random.random()))  # jitter spreads a herd
            delay = min(delay * 2, self.max_backoff_s)

    async def _session(self, ws: ClientConnection) -> None:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if welcome.get("type") != "welcome":
            await ws.close()
            if welcome.get("status") == 503:  # a server the hub needs is down: later
                raise TryAgain(welcome.get("error", "unavailable"))
            raise ClientFatal(welcome.get("error", "refused"))
        if self.epoch is not None and welcome["epoch"] != self.epoch:
            # The log was reset: offsets restart, so replay every channel from its start.
            self.last = dict.fromkeys(self.last, 0)
        self.epoch = welcome["epoch"]
        self.replica = welcome.get("replica")  # the hub replica serving this connection
        self.heartbeat_s = float(welcome.get("heartbeat_s", self.heartbeat_s))
        self._ws = ws
        for channel in list(self.channels):
            await self._send_subscribe(channel)
        self._connected.set()
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), self.heartbeat_s * self.silence_heartbeats)
            except websockets.ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                if code in FATAL_CLOSE_CODES:
                    raise ClientFatal(f"{FATAL_CLOSE_CODES[code]} (close code {code})") from None
                raise
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "message":
                ch, off = frame["channel"], frame["offset"]
                if off <= self.last.get(ch, -1):
                    continue  # already handed out before a reconnect
                self.last[ch] = off
                self._out.put_nowait(frame)
            elif kind in ("heartbeat", "pong", "subscribed"):
                if kind == "subscribed" and frame["channel"] not in self.last:
                    self.last[frame["channel"]] = frame["head"]
                continue
            else:
                if kind == "history_gap":
                    self.last[frame["channel"]] = frame["first_available"] - 1
                elif kind == "epoch_changed":
                    # The log started over: offsets restart, the next one is the new
                    # epoch's first (not a duplicate of an old one).
                    self.epoch = frame["epoch"]
                    self.last[frame["channel"]] = 0
                self._out.put_nowait(frame)
