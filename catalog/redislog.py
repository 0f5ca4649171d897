"""The event log on Redis Streams: several hub processes share channels, offsets, history.

Layout under a key prefix ``P`` (from ``redis://host:port/db?prefix=P``):

- ``P:epoch`` — the log's epoch, set once (a flushed Redis gets a new one, so
  clients replaying from old offsets are told ``epoch_changed``);
- ``P:head:<channel>`` — the channel's last offset (a counter);
- ``P:ch:<channel>`` — one stream per channel whose entry ids are ``<offset>-0``:
  the offset *is* the stream id, so reading "after offset n" is
  ``XRANGE (n-0 +`` and offsets stay contiguous by construction;
- ``P:all`` — one global stream, entry ids ``<seq>-0``, that every process
  tails with ``XREAD BLOCK`` for cross-process delivery;
- ``P:channels`` — a set of channel names (for retention).

An append is one Lua script, so offset allocation and both XADDs are atomic:
two processes publishing on one channel can neither reuse nor skip an offset.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse, urlunparse

import redis

from catalog.eventlog import Message

_APPEND = """
local off = redis.call('INCR', KEYS[1])
local seq = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[2], off .. '-0', 'ts', ARGV[2], 'type', ARGV[3], 'data', ARGV[4],
           'source', ARGV[5])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], seq .. '-0', 'channel', ARGV[1],
           'offset', off, 'ts', ARGV[2], 'type', ARGV[3], 'data', ARGV[4], 'source', ARGV[5])
redis.call('SADD', KEYS[5], ARGV[1])
return {off, seq}
"""


def _id_num(entry_id: bytes | str) -> int:
    s = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(s.split("-", 1)[0])


def split_url(url: str) -> tuple[str, str]:
    """``redis://h:p/0?prefix=x`` → (connection URL without the prefix, prefix)."""
    parsed = urlparse(url)
    qs = parse_qs(parsed.query)
    prefix = (qs.pop("prefix", ["blockhub"]) or ["blockhub"])[0]
    rest = "&".join(f"{k}={v[0]}" for k, v in qs.items())
    return urlunparse(parsed._replace(query=rest)), prefix


class RedisEventLog:
    """An :class:`~catalog.eventlog.EventLog`-compatible log on Redis Streams."""

    blocking_tail = True

    def __init__(self, url: str, *, global_maxlen: int = 1_000_000) -> None:
        self.url = url
        conn_url, self.prefix = split_url(url)
        # Typed Any: redis-py's stubs type replies as unions of bytes, str and awaitables.
        self.redis: Any = redis.Redis.from_url(conn_url, socket_timeout=30)
        # XREAD BLOCK holds its connection: give the tailer its own client.
        self._tail_redis: Any = redis.Redis.from_url(conn_url, socket_timeout=30)
        self.global_maxlen = global_maxlen
        self._append = self.redis.register_script(_APPEND)
        self.redis.set(self._k("epoch"), uuid.uuid4().hex[:12], nx=True)
        epoch: Any = self.redis.get(self._k("epoch"))
        self.epoch: str = epoch.decode()

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def change_probe(self) -> None:
        """None: ``tail`` blocks until something is appended, so the bus does not poll."""
        return None

    def change_watch(self) -> None:
        """None: ``tail`` blocks until something is appended."""
        return None

    def loop_head(self) -> None:
        """None: a network round trip, read in a worker thread."""
        return None

    def loop_tail(self) -> None:
        """None: reads go over the network, in a worker thread."""
        return None

    def dispose(self) -> None:
        self.redis.close()
        self._tail_redis.close()

    def append(
        self,
        channel: str,
        type: str,
        data: dict[str, Any],
        source: dict[str, Any] | None = None,
    ) -> Message:
        ts = datetime.now(UTC)
        off, seq = self._append(
            keys=[
                self._k("head", channel),
                self._k("ch", channel),
                self._k("seq"),
                self._k("all"),
                self._k("channels"),
            ],
            args=[
                channel,
                ts.isoformat(),
                type,
                json.dumps(data, ensure_ascii=False, default=str),
                json.dumps(source or {}, ensure_ascii=False),
                self.global_maxlen,
            ],
        )
        return Message(int(seq), channel, int(off), self.epoch, ts, type, data, source or {})

    __call__ = append

    def append_many(
        self,
        channel: str,
        type: str,
        items: list[dict[str, Any]],
        source: dict[str, Any] | None = None,
    ) -> tuple[int, int]:
        """Append several messages to one channel atomically (one MULTI/EXEC of the
        append script); returns the first and last offset."""
        if not items:
            head = self.head(channel)
            return head + 1, head
        ts = datetime.now(UTC).isoformat()
        src = json.dumps(source or {}, ensure_ascii=False)
        keys = [
            self._k("head", channel),
            self._k("ch", channel),
            self._k("seq"),
            self._k("all"),
            self._k("channels"),
        ]
        pipe = self.redis.pipeline(transaction=True)
        for item in items:
            data = json.dumps(item, ensure_ascii=False, default=str)
            self._append(
                keys=keys, args=[channel, ts, type, data, src, self.global_maxlen], client=pipe
            )
        replies = pipe.execute()
        return int(replies[0][0]), int(replies[-1][0])

    def _message(self, seq: int, channel: str, offset: int, f: dict[bytes, bytes]) -> Message:
        return Message(
            seq=seq,
            channel=channel,
            offset=offset,
            epoch=self.epoch,
            ts=datetime.fromisoformat(f[b"ts"].decode()),
            type=f[b"type"].decode(),
            data=json.loads(f[b"data"]),
            source=json.loads(f[b"source"]) if f.get(b"source") else {},
        )

    def read(self, channel: str, after: int = 0, limit: int = 1000) -> list[Message]:
        entries = self.redis.xrange(self._k("ch", channel), f"({after}-0", "+", count=limit)
        # seq is not kept per channel; 0 marks "read by offset" (the bus orders by offset).
        return [self._message(0, channel, _id_num(i), f) for i, f in entries]

    def tail(self, after_seq: int, limit: int = 1000, block_s: float = 0) -> list[Message]:
        key = self._k("all")
        if block_s > 0:
            res = self._tail_redis.xread(
                {key: f"{after_seq}-0"}, count=limit, block=int(block_s * 1000)
            )
            entries = res[0][1] if res else []
        else:
            entries = self.redis.xrange(key, f"({after_seq}-0", "+", count=limit)
        return [
            self._message(_id_num(i), f[b"channel"].decode(), int(f[b"offset"]), f)
            for i, f in entries
        ]

    def last_seq(self) -> int:
        v = self.redis.get(self._k("seq"))
        return int(v) if v is not None else 0

    def head(self, channel: str) -> int:
        v = self.redis.get(self._k("head", channel))
        return int(v) if v is not None else 0

    def first_retained(self, channel: str) -> int:
        first = self.redis.xrange(self._k("ch", channel), "-", "+", count=1)
        if first:
            return _id_num(first[0][0])
        return self.head(channel) + 1

    def trim(self, channel: str, keep_last: int) -> int:
        cut = self.head(channel) - keep_last  # offsets up to this one go
        if cut <= 0:  # a channel shorter than its retention (a stream ID cannot be negative)
            return 0
        return int(
            self.redis.xtrim(self._k("ch", channel), minid=f"{cut + 1}-0", approximate=False)
        )

    def channels(self) -> list[str]:
        return sorted(c.decode() for c in self.redis.smembers(self._k("channels")))

    def trim_before(self, channel: str, before: datetime) -> int:
        """Drop messages older than ``before`` (by their timestamp), keeping the newest."""
        key = self._k("ch", channel)
        head = self.head(channel)
        cut = 0
        after = 0
        while True:  # walk from the oldest until the first message young enough
            batch = self.redis.xrange(key, f"({after}-0", "+", count=500)
            if not batch:
                break
            for i, f in batch:
                off = _id_num(i)
                if off >= head or datetime.fromisoformat(f[b"ts"].decode()) >= before:
                    batch = []
                    break
                cut = off
            if not batch:
                break
            after = _id_num(batch[-1][0])
        if cut == 0:
            return 0
        return int(self.redis.xtrim(key, minid=f"{cut + 1}-0", approximate=False))

    def delete_all(self) -> None:
        """Remove every key of this prefix (tests use a unique prefix each)."""
        keys = list(self.redis.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            self.redis.delete(*keys)
