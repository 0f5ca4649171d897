"""What the bus needs of an event log, and the log for a URL.

Two backends: :class:`eventlog.sqllog.EventLog` (SQLite by default, PostgreSQL by URL) and
:class:`eventlog.redislog.RedisEventLog` (Redis Streams, docs/decisions.md D6b).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlparse, urlunparse

from eventlog.fswatch import Watch
from eventlog.message import Message
from eventlog.sqllog import EventLog


class LogBackend(Protocol):
    """What the bus needs of an event log (SQL: :class:`EventLog`; Redis: ``RedisEventLog``)."""

    url: str
    epoch: str
    blocking_tail: bool

    def append(
        self,
        channel: str,
        type: str,
        data: dict[str, Any],
        source: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> Message: ...
    def append_many(
        self,
        channel: str,
        type: str,
        items: list[dict[str, Any]],
        source: dict[str, Any] | None = None,
    ) -> tuple[int, int]: ...
    def verify(self, after_seq: int, epoch: str) -> str: ...
    def read(self, channel: str, after: int = 0, limit: int = 1000) -> list[Message]: ...
    def tail(self, after_seq: int, limit: int = 1000, block_s: float = 0) -> list[Message]: ...
    def change_probe(self) -> Callable[[], bool] | None: ...
    def loop_tail(self) -> Callable[[int, int], list[Message]] | None: ...
    def loop_head(self) -> Callable[[str], int] | None: ...
    def change_watch(self) -> Watch | None: ...
    def last_seq(self) -> int: ...
    def head(self, channel: str) -> int: ...
    def first_retained(self, channel: str) -> int: ...
    def trim(self, channel: str, keep_last: int) -> int: ...
    def trim_before(self, channel: str, before: datetime) -> int: ...
    def channels(self) -> list[str]: ...
    def dispose(self) -> None: ...


def redacted_url(url: str) -> str:
    """A log's URL for messages and logs: without a user name or password."""
    parsed = urlparse(url)
    if parsed.password is None and parsed.username is None:
        return url
    host = parsed.hostname or ""
    netloc = f"{host}:{parsed.port}" if parsed.port else host
    return urlunparse(parsed._replace(netloc=netloc))


def open_event_log(url: str) -> LogBackend:
    """The log for a URL: ``redis://…?prefix=…`` → Redis Streams, else a SQLAlchemy URL."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        from eventlog.redislog import RedisEventLog  # redis-py only when asked for

        return RedisEventLog(url)
    return EventLog(url)
