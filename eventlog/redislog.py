"""The event log on Redis Streams: several hub processes share channels, offsets, history.

Layout under a key prefix ``P`` (from ``redis://host:port/db?prefix=P``):

- ``P:epoch`` — the log's epoch.  Offsets count within an epoch; a log that starts
  over gets a new one, so clients replaying from old offsets are told
  ``epoch_changed`` instead of being handed other messages under the offsets they know;
- ``P:head:<channel>`` — the channel's last offset (a counter);
- ``P:ch:<channel>`` — one stream per channel whose entry ids are ``<offset>-0``:
  the offset *is* the stream id, so reading "after offset n" is
  ``XRANGE (n-0 +`` and offsets stay contiguous by construction;
- ``P:all`` — one global stream, entry ids ``<seq>-0``, that every process
  tails with ``XREAD BLOCK`` for cross-process delivery;
- ``P:channels`` — a set of channel names (for retention);
- ``P:eid:<epoch>:<event id>`` — appends made with an event id (the catalog's outbox),
  so that appending the same event again returns the first append (kept 7 days).

An append is one Lua script, so offset allocation and both XADDs are atomic:
two processes publishing on one channel can neither reuse nor skip an offset.
Every entry carries the epoch it was written in.

**When Redis loses the log.**  A flushed Redis, or one restarted without its data, has
no ``P:epoch``: the first append (or the first :meth:`RedisEventLog.verify`) starts a new
epoch.  A restart or failover that kept the epoch but lost the last writes (an RDB
snapshot, ``appendfsync everysec``, a replica behind its master) would reuse offsets and
seqs for other messages; :meth:`~RedisEventLog.verify` finds it — the server's
``run_id`` changed and the last entry this process read is gone or different — and
starts a new, empty epoch (everything of the prefix is dropped in one script), so no
subscriber is handed a different message under an offset it already has.  docs/
operations.md ("Failures") says what subscribers and operators see.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse, urlunparse

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from eventlog.message import LogUnavailable, Message

log = logging.getLogger(__name__)

# KEYS: head, channel stream, seq, global stream, channel set, epoch.
# ARGV: channel, ts, type, data, source, global maxlen, a new epoch (used only if the log
# has none: it was flushed or lost), event id ('' for none), key prefix.
# Returns {offset, seq, epoch, ts, 1 if the event id was appended before}.
_APPEND = """
local e = redis.call('GET', KEYS[6])
if not e then
  e = ARGV[7]
  redis.call('SET', KEYS[6], e)
end
local idk = false
if ARGV[8] ~= '' then
  idk = ARGV[9] .. ':eid:' .. e .. ':' .. ARGV[8]
  local known = redis.call('GET', idk)
  if known then
    local off, seq, ts = string.match(known, '^(%d+) (%d+) (.+)$')
    return {tonumber(off), tonumber(seq), e, ts, 1}
  end
end
local off = redis.call('INCR', KEYS[1])
local seq = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[2], off .. '-0', 'ts', ARGV[2], 'type', ARGV[3], 'data', ARGV[4],
           'source', ARGV[5], 'epoch', e)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], seq .. '-0', 'channel', ARGV[1],
           'offset', off, 'ts', ARGV[2], 'type', ARGV[3], 'data', ARGV[4], 'source', ARGV[5],
           'epoch', e)
redis.call('SADD', KEYS[5], ARGV[1])
if idk then
  redis.call('SET', idk, off .. ' ' .. seq .. ' ' .. ARGV[2], 'EX', 604800)
end
return {off, seq, e, ARGV[2], 0}
"""

# Start a new, empty epoch unless another process did already.  KEYS: epoch, channel set.
# ARGV: the epoch expected now ('' for none), the new one, key prefix.  Returns the epoch.
_START_OVER = """
local now = redis.call('GET', KEYS[1])
if (now or '') ~= ARGV[1] then
  return now
end
for _, c in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('UNLINK', ARGV[3] .. ':head:' .. c, ARGV[3] .. ':ch:' .. c)
end
redis.call('UNLINK', ARGV[3] .. ':all', ARGV[3] .. ':seq', KEYS[2])
redis.call('SET', KEYS[1], ARGV[2])
return ARGV[2]
"""

#: Longest XREAD BLOCK: the tail's socket times out a few seconds later, so a server that
#: stops answering without closing the connection is noticed within ~15 s.
TAIL_BLOCK_MAX_S = 10.0

#: What a failed round trip raises: the server is down, restarting or still loading.
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError)


def _new_epoch() -> str:
    return uuid.uuid4().hex[:12]


def _fingerprint(fields: dict[bytes, bytes]) -> bytes:
    """What tells one entry of the global stream from another written under the same seq
    after a restart lost history: its time stamp (µs), channel and offset."""
    return b"|".join(
        (fields.get(b"ts", b""), fields.get(b"channel", b""), fields.get(b"offset", b""))
    )


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
    """An :class:`~eventlog.sqllog.EventLog`-compatible log on Redis Streams."""

    blocking_tail = True

    def __init__(self, url: str, *, global_maxlen: int = 1_000_000) -> None:
        self.url = url
        conn_url, self.prefix = split_url(url)
        # Typed Any: redis-py's stubs type replies as unions of bytes, str and awaitables.
        # A server that is down answers within a couple of seconds (the URL may say
        # otherwise: ?socket_connect_timeout=…); a few quick retries ride out a blip, and
        # callers see anything longer (the outbox and the tailer retry on their own terms).
        self.redis: Any = redis.Redis.from_url(
            conn_url,
            socket_timeout=10,
            socket_connect_timeout=2,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), 3),
        )
        # XREAD BLOCK holds its connection: give the tailer its own client.  It does not
        # retry by itself: the bus sees the failure, backs off and checks the log's
        # identity before it reads on (a reconnect may be to a server that lost the log).
        self._tail_redis: Any = redis.Redis.from_url(
            conn_url,
            socket_timeout=TAIL_BLOCK_MAX_S + 5,  # a server that stops answering is found
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )
        self.global_maxlen = global_maxlen
        self._append = self.redis.register_script(_APPEND)
        self._start_over_script = self.redis.register_script(_START_OVER)
        # Read at first use: a process may open the log while Redis is down (a CLI ingest
        # commits its version and leaves the event in the catalog's outbox).
        self._epoch: str | None = None
        self._server: str | None = None  # the server's run_id when last verified
        # (seq, fingerprint) of the last global entry read: a restart that kept it kept
        # everything before it.
        self._mark: tuple[int, bytes] | None = None

    @property
    def epoch(self) -> str:
        """The log's epoch as this process last saw it (read from Redis at first use)."""
        if self._epoch is None:
            try:
                self.redis.set(self._k("epoch"), _new_epoch(), nx=True)
                epoch: Any = self.redis.get(self._k("epoch"))
            except UNAVAILABLE as e:
                raise LogUnavailable(f"event log at {self._where()}: {e}") from None
            self._epoch = epoch.decode()
        return self._epoch

    @epoch.setter
    def epoch(self, value: str) -> None:
        self._epoch = value

    def name_clients(self, name: str) -> None:
        """Name this process's connections on the server (``CLIENT LIST`` shows
        ``<name>:log`` and ``<name>:tail``): which replica holds which connection.  Applies
        to connections made from now on; call it before the first use."""
        for client, role in ((self.redis, "log"), (self._tail_redis, "tail")):
            client.connection_pool.connection_kwargs["client_name"] = f"{name}:{role}"

    def _where(self) -> str:
        """host:port/db of the server, without credentials (for messages and logs)."""
        kw = self.redis.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"

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

    def _keys(self, channel: str) -> list[str]:
        return [
            self._k("head", channel),
            self._k("ch", channel),
            self._k("seq"),
            self._k("all"),
            self._k("channels"),
            self._k("epoch"),
        ]

    def append(
        self,
        channel: str,
        type: str,
        data: dict[str, Any],
        source: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> Message:
        ts = datetime.now(UTC)
        off, seq, epoch, stamp, _known = self._append(
            keys=self._keys(channel),
            args=[
                channel,
                ts.isoformat(),
                type,
                json.dumps(data, ensure_ascii=False, default=str),
                json.dumps(source or {}, ensure_ascii=False),
                self.global_maxlen,
                _new_epoch(),
                event_id or "",
                self.prefix,
            ],
        )
        epoch = self._adopt(epoch)
        when = ts if not _known else datetime.fromisoformat(stamp.decode())
        return Message(int(seq), channel, int(off), epoch, when, type, data, source or {})

    __call__ = append

    def _adopt(self, epoch: bytes | str) -> str:
        """The epoch an append was made in; this process goes on in it (an append to a
        flushed Redis starts a new epoch: ``P:epoch`` is set again with the rest)."""
        e = epoch.decode() if isinstance(epoch, bytes) else epoch
        if e != self._epoch:
            if self._epoch is not None:
                log.warning("event log %s: epoch %s -> %s", self.prefix, self._epoch, e)
            self._epoch = e
        return e

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
        keys = self._keys(channel)
        fresh = _new_epoch()
        pipe = self.redis.pipeline(transaction=True)
        for item in items:
            data = json.dumps(item, ensure_ascii=False, default=str)
            self._append(
                keys=keys,
                args=[channel, ts, type, data, src, self.global_maxlen, fresh, "", self.prefix],
                client=pipe,
            )
        replies = pipe.execute()
        self._adopt(replies[-1][2])
        return int(replies[0][0]), int(replies[-1][0])

    def _message(self, seq: int, channel: str, offset: int, f: dict[bytes, bytes]) -> Message:
        epoch = f.get(b"epoch")
        return Message(
            seq=seq,
            channel=channel,
            offset=offset,
            # Entries written before epochs were stamped belong to the epoch known here.
            epoch=epoch.decode() if epoch else self.epoch,
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
            block_ms = int(min(block_s, TAIL_BLOCK_MAX_S) * 1000)
            res = self._tail_redis.xread({key: f"{after_seq}-0"}, count=limit, block=block_ms)
            entries = res[0][1] if res else []
        else:
            entries = self.redis.xrange(key, f"({after_seq}-0", "+", count=limit)
        if entries:
            last_id, last = entries[-1]
            self._mark = (_id_num(last_id), _fingerprint(last))
        return [
            self._message(_id_num(i), f[b"channel"].decode(), int(f[b"offset"]), f)
            for i, f in entries
        ]

    def last_seq(self) -> int:
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(self._k("seq"))
        pipe.xrevrange(self._k("all"), "+", "-", count=1)
        v, top = pipe.execute()
        seq = int(v) if v is not None else 0
        if top and _id_num(top[0][0]) == seq:
            self._mark = (seq, _fingerprint(top[0][1]))
        return seq

    def verify(self, after_seq: int, epoch: str) -> str:
        """The log's epoch now, for a reader that has read the global stream up to
        ``after_seq`` in ``epoch``: the same epoch while the log goes on; another one when
        the log started over, in which case nothing of the old one may be read on.

        One round trip: the epoch, the seq counter, the server's ``run_id`` and the entry
        at ``after_seq``.  The log started over when its epoch is gone (flushed, restarted
        without its data), its seq went back, or the server is another one (restarted,
        failed over) that does not hold the entry last read as it was read.  Then a new,
        empty epoch is started (unless another process did first) and returned.
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self._k("epoch"))
        pipe.get(self._k("seq"))
        pipe.info("server")
        pipe.xrange(self._k("all"), f"{after_seq}-0", f"{after_seq}-0")
        try:
            now, seq, info, entry = pipe.execute()
        except UNAVAILABLE as e:
            raise LogUnavailable(f"event log at {self._where()}: {e}") from None
        server = str(info.get("run_id", ""))
        restarted = self._server is not None and server != self._server
        self._server = server
        current = now.decode() if now is not None else None
        if current is not None and current != epoch:
            self._epoch = current  # another process started the new epoch already
            return current
        reason = None
        if current is None:
            reason = "its keys are gone (flushed, or the server restarted without its data)"
        elif int(seq or 0) < after_seq:
            reason = f"its sequence went back from {after_seq} to {int(seq or 0)}"
        elif restarted and after_seq and not self._continues(after_seq, entry):
            reason = "the server restarted or failed over without the last messages read"
        if reason is None:
            return epoch
        new = self._start_over(current)
        log.warning(
            "event log %s at %s started over: %s; epoch %s -> %s",
            self.prefix,
            self._where(),
            reason,
            epoch,
            new,
        )
        return new

    def _continues(self, after_seq: int, entry: list[Any]) -> bool:
        """Whether the global stream still holds the entry at ``after_seq`` as it was read."""
        if not entry:
            return False
        mark = self._mark
        return mark is None or mark[0] != after_seq or _fingerprint(entry[0][1]) == mark[1]

    def _start_over(self, expected: str | None) -> str:
        """A new, empty epoch, unless another process has already started one."""
        got = self._start_over_script(
            keys=[self._k("epoch"), self._k("channels")],
            args=[expected or "", _new_epoch(), self.prefix],
        )
        self._mark = None
        return self._adopt(got)

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
