"""The log's message and what publishing needs: one module both backends import.

A :class:`Message` is what a backend stores and returns, with its JSON wire form made once
and shared by every subscriber; :class:`Publisher` is what the ingest flow needs to
announce something; :class:`LogUnavailable` is a log server that cannot be reached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

import orjson


class LogUnavailable(Exception):
    """The log's server cannot be reached (refused, timed out, restarting)."""


@dataclass(frozen=True)
class Message:
    """One published message, as stored and as sent to subscribers."""

    seq: int
    channel: str
    offset: int
    epoch: str
    ts: datetime
    type: str
    data: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "message",
            "channel": self.channel,
            "offset": self.offset,
            "epoch": self.epoch,
            "ts": self.ts.isoformat(),
            "event": self.type,
            "data": self.data,
            "source": self.source,
        }

    @cached_property
    def wire(self) -> str:
        """The JSON frame sent to subscribers, serialized once for all of them."""
        return self.wire_bytes.decode()

    @cached_property
    def wire_bytes(self) -> bytes:
        return orjson.dumps(self.to_wire(), default=str)

    def framed(self, encode: Callable[[bytes], bytes]) -> bytes:
        """``wire_bytes`` as the transport's frame, made by ``encode`` once per message and
        kept: the fan-out sends the same bytes to every subscriber.  The log does not know
        the transport: the top floor (the websocket protocol) passes its one encoder."""
        frame: bytes | None = self.__dict__.get("_frame")
        if frame is None:
            frame = self.__dict__["_frame"] = encode(self.wire_bytes)
        return frame


class Publisher(Protocol):
    """What the ingest flow needs to announce something: append one message.  With an
    ``event_id`` the append happens once: the same id again returns the stored message."""

    def __call__(
        self,
        channel: str,
        type: str,
        data: dict[str, Any],
        source: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> Any: ...
