"""Who is connected to this hub process: connection limits, presence, heartbeats.

Each websocket registers here after authenticating.  Joining and leaving are
published on the ``presence`` channel (so operators on any node see them live)
and listed by ``GET /v1/presence``.  One task sends an app-level heartbeat to
every connection, so a client can tell a dead link from a quiet one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from catalog.domain.channels import PRESENCE
from catalog.errors import HubError
from catalog.identity.store import Principal
from hub.live.bus import Bus
from hub.live.subscription import Notice, Subscription

log = logging.getLogger(__name__)

CLOSE_TOO_MANY = 4029

NODE = f"{socket.gethostname()}:{os.getpid()}"


class TooManyConnections(HubError):
    code = "too_many_connections"
    status = 429


@dataclass
class Connection:
    id: str
    principal: Principal
    sub: Subscription
    connected_at: datetime
    client: str | None = None
    channels: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            "connection": self.id,
            "principal": self.principal.id,
            "agency": self.principal.agency_id,
            "role": self.principal.role,
            "node": NODE,
            "client": self.client,
            "connected_at": self.connected_at.isoformat(),
            "channels": sorted(self.channels),
        }


class Presence:
    """The connections of this process, by principal."""

    def __init__(self, bus: Bus, *, max_per_principal: int, heartbeat_s: float) -> None:
        self.bus = bus
        self.max_per_principal = max_per_principal
        self.heartbeat_s = heartbeat_s
        self._conns: dict[str, Connection] = {}
        self._per_principal: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    def connections(self) -> int:
        """Connections open on this process (the ``blockhub_ws_connections`` gauge)."""
        return len(self._conns)

    def count(self, principal_id: str) -> int:
        return self._per_principal.get(principal_id, 0)

    async def join(self, principal: Principal, sub: Subscription, client: str | None) -> Connection:
        if self.count(principal.id) >= self.max_per_principal:
            raise TooManyConnections(
                f"principal {principal.id!r} already has {self.max_per_principal} connections",
                limit=self.max_per_principal,
            )
        conn = Connection(
            id=f"{NODE}/{next(self._ids)}",
            principal=principal,
            sub=sub,
            connected_at=datetime.now(UTC),
            client=client,
        )
        self._conns[conn.id] = conn
        self._per_principal[principal.id] = self.count(principal.id) + 1
        try:
            await self.bus.publish_async(
                PRESENCE, "presence.joined", conn.to_dict(), {"node": NODE}
            )
        except Exception as e:  # the event log is down: the connection is served all the same
            log.warning("presence of %s not announced: %s", conn.id, e)
        return conn

    async def leave(self, conn: Connection) -> None:
        if self._conns.pop(conn.id, None) is None:
            return
        left = self.count(conn.principal.id) - 1
        if left > 0:
            self._per_principal[conn.principal.id] = left
        else:
            self._per_principal.pop(conn.principal.id, None)
        with contextlib.suppress(Exception):  # leaving must not fail a closing socket
            data = {**conn.to_dict(), "left_at": datetime.now(UTC).isoformat()}
            await self.bus.publish_async(PRESENCE, "presence.left", data, {"node": NODE})

    def list(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self._conns.values()]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._heartbeats(), name="blockhub-ws-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            beat = Notice("heartbeat", "", {"ts": datetime.now(UTC).isoformat()})
            for n, conn in enumerate(list(self._conns.values())):
                if n and n % self.bus.ROUND_SLICE == 0:  # let the fan-out run in between
                    await asyncio.sleep(0)
                conn.sub.notify(beat)
