"""One address in front of several hub replicas: a small TCP proxy (``blockhub proxy``).

Every replica answers every request and every websocket the same way (they share the
catalog, the lake and the event log), so the proxy needs no notion of HTTP: each client
connection is joined to the next replica in turn, byte for byte, for as long as it lasts
(a websocket stays on its replica; HTTP keep-alive too).  A replica that refuses the
connection (stopped, killed, restarting) is skipped and left out for ``down_s``; when it
dies under open connections, those connections close and their clients reconnect —
through the proxy, to a replica that is up — and replay from the offsets they hold
(docs/websocket.md).  With no replica up, a client gets the hub's one JSON error body,
503 ``service_unavailable``.

It is for one machine, development and the tests: production puts nginx, Caddy or
HAProxy with TLS in front (docs/operations.md "Several replicas").  The proxy reads no
data and authenticates nobody — every replica checks every request's token itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

#: How long a replica may go on answering a client that has finished sending.
DRAIN_S = 30.0

_UNAVAILABLE = json.dumps(
    {
        "ok": False,
        "status": 503,
        "code": "service_unavailable",
        "error": "no hub replica can be reached; try again shortly",
        "detail": {"service": "hub"},
    }
).encode()


def parse_address(text: str, *, what: str = "address") -> tuple[str, int]:
    """``host:port`` → (host, port); a ValueError naming ``what`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} {text!r} is not host:port")
    return host.strip("[]"), int(port)


class Proxy:
    """Round robin over replicas, skipping the ones that refuse connections."""

    def __init__(
        self,
        backends: Sequence[tuple[str, int]],
        *,
        down_s: float = 2.0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        if not backends:
            raise ValueError("a proxy needs at least one replica")
        self.backends = list(backends)
        self.down_s, self.connect_timeout_s = down_s, connect_timeout_s
        self._next = 0
        self._down_until: dict[tuple[str, int], float] = {}
        self.connections: dict[tuple[str, int], int] = dict.fromkeys(self.backends, 0)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: a free port); returns the port."""
        self._server = await asyncio.start_server(self._handle, host, port)
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def _order(self) -> list[tuple[str, int]]:
        """Replicas to try for one connection: up ones from the next in turn, then the
        ones taken for down (a replica back early is found again)."""
        n = len(self.backends)
        start, self._next = self._next, (self._next + 1) % n
        ring = [self.backends[(start + i) % n] for i in range(n)]
        now = time.monotonic()
        up = [b for b in ring if self._down_until.get(b, 0.0) <= now]
        return up + [b for b in ring if b not in up]

    async def _connect(
        self,
    ) -> tuple[tuple[str, int], asyncio.StreamReader, asyncio.StreamWriter] | None:
        for backend in self._order():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*backend), self.connect_timeout_s
                )
            except (OSError, TimeoutError) as e:
                if self._down_until.get(backend, 0.0) <= time.monotonic():
                    log.warning("replica %s:%d not reachable (%s)", *backend, e)
                self._down_until[backend] = time.monotonic() + self.down_s
                continue
            self._down_until.pop(backend, None)
            return backend, reader, writer
        return None

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            got = await self._connect()
            if got is None:
                client_w.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Retry-After: 1\r\nConnection: close\r\n"
                    + f"Content-Length: {len(_UNAVAILABLE)}\r\n\r\n".encode()
                    + _UNAVAILABLE
                )
                with contextlib.suppress(OSError):
                    await client_w.drain()
                return
            backend, up_r, up_w = got
            self.connections[backend] += 1
            try:
                await _join(client_r, client_w, up_r, up_w)
            finally:
                self.connections[backend] -= 1
        finally:
            client_w.close()
            with contextlib.suppress(Exception):
                await client_w.wait_closed()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        # The other side learns at once (half close): a client that is done sending still
        # gets the rest of its answer; a replica that ended its side ends the client's.
        with contextlib.suppress(OSError, RuntimeError):
            if dst.can_write_eof():
                dst.write_eof()


async def _join(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    up_r: asyncio.StreamReader,
    up_w: asyncio.StreamWriter,
) -> None:
    """Copy both ways; when the replica's side ends (it answered and closed, or died),
    close both; when the client's side ends first, let the replica finish its answer
    (at most :data:`DRAIN_S`)."""
    to_replica = asyncio.create_task(_pipe(client_r, up_w))
    to_client = asyncio.create_task(_pipe(up_r, client_w))
    tasks = [to_replica, to_client]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if to_client not in done:
            await asyncio.wait([to_client], timeout=DRAIN_S)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        up_w.close()


async def run_proxy(listen: tuple[str, int], backends: Sequence[tuple[str, int]]) -> None:
    """``blockhub proxy``: serve until interrupted."""
    proxy = Proxy(backends)
    port = await proxy.start(*listen)
    log.warning("proxy on %s:%d → %s", listen[0], port, ", ".join(f"{h}:{p}" for h, p in backends))
    await proxy.serve_forever()
