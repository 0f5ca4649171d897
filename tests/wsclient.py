"""A tiny synchronous websocket client for tests: auth, subscribe, read typed frames."""

from __future__ import annotations

import json
from typing import Any

from websockets.sync.client import ClientConnection, connect


class WS:
    def __init__(self, base: str, token: str) -> None:
        self.conn: ClientConnection = connect(f"ws://{base}/v1/ws", open_timeout=10)
        self.pending: list[dict[str, Any]] = []  # messages read while waiting for a reply
        self.send({"op": "auth", "token": token})
        self.welcome = self.recv()
        assert self.welcome["type"] == "welcome", self.welcome

    def send(self, obj: dict[str, Any]) -> None:
        self.conn.send(json.dumps(obj))

    def recv(self, timeout: float = 10) -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = json.loads(self.conn.recv(timeout))
            if frame["type"] != "heartbeat":
                return frame

    def subscribe(self, channel: str, **extra: Any) -> dict[str, Any]:
        self.send({"op": "subscribe", "channel": channel, **extra})
        return self.reply()

    def reply(self, timeout: float = 10) -> dict[str, Any]:
        """The next frame that is not a channel message (ok, error, subscribed...)."""
        while True:
            f = self.recv(timeout)
            if f["type"] != "message":
                return f
            self.pending.append(f)

    def messages(self, n: int, timeout: float = 10) -> list[dict[str, Any]]:
        out = self.pending[:n]
        del self.pending[:n]
        while len(out) < n:
            f = self.recv(timeout)
            if f["type"] == "message":
                out.append(f)
        return out

    def close(self) -> None:
        self.conn.close()
