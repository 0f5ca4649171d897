"""The durable event log behind the bus: channels, per-channel offsets, an epoch.

Every message published in blockhub is appended here first, so that a subscriber
can replay what it missed and a restart loses nothing.  SQLite by default (one
file, WAL), PostgreSQL by URL.  Offsets increase by one per channel with no gap;
``seq`` orders all messages of the log and lets a process tail what other
processes (a CLI ingest, an Airflow task) appended.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    func,
    insert,
    select,
    update,
)

from catalog.db import make_engine
from catalog.runtime import ProcessLock
from eventlog.fswatch import Watch, watch
from eventlog.message import Message

_meta = MetaData()


def _sqlite_normal_sync(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


_info = Table("log_info", _meta, Column("key", String(32), primary_key=True), Column("value", Text))
_channels = Table(
    "log_channels",
    _meta,
    Column("name", String(200), primary_key=True),
    Column("last_offset", BigInteger, nullable=False),
)
_messages = Table(
    "log_messages",
    _meta,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(200), nullable=False, index=True),
    Column("offset", BigInteger, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("type", String(64), nullable=False),
    Column("data", Text, nullable=False),
    Column("source", Text, nullable=True),
)
# Appends that carry an event id (the catalog's outbox, catalog/outbox.py) are made once:
# appending the same id again returns the message already stored.  Kept as long as the
# message itself (retention trims both).
_event_ids = Table(
    "log_event_ids",
    _meta,
    Column("event_id", String(64), primary_key=True),
    Column("channel", String(200), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
)


def _sqlite_ts(text: str) -> datetime:
    """A ``ts`` as SQLAlchemy stores it in SQLite (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC)."""
    return _aware(datetime.fromisoformat(text))


def _aware(ts: datetime) -> datetime:
    """A stored time as UTC (SQLite keeps no time zone)."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


_NEXT_OFFSET = (
    "UPDATE log_channels SET last_offset = last_offset + 1 WHERE name = ? RETURNING last_offset"
)
_HEAD = "SELECT last_offset FROM log_channels WHERE name = ?"
_NEW_CHANNEL = "INSERT INTO log_channels (name, last_offset) VALUES (?, 1)"
_INSERT_MESSAGE = (
    'INSERT INTO log_messages (channel, "offset", ts, type, data, source) VALUES (?, ?, ?, ?, ?, ?)'
)
_KNOWN_EVENT = "SELECT seq, channel, offset, ts FROM log_event_ids WHERE event_id = ?"
_NEW_EVENT = (
    'INSERT INTO log_event_ids (event_id, channel, "offset", seq, ts) VALUES (?, ?, ?, ?, ?)'
)
_BUSY_WAIT_S = 30.0


def _begin_immediate(con: sqlite3.Connection) -> None:
    """Take the log's write lock, waiting in short steps while another writer holds it."""
    deadline = time.monotonic() + _BUSY_WAIT_S
    pause = 0.0001
    while True:
        try:
            con.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            if time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.002)


class EventLog:
    """Append-only, per-channel ordered message log."""

    #: ``tail`` can block until something is appended (the bus then needs no polling).
    blocking_tail = False

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._probes: list[sqlite3.Connection] = []
        self._writers = threading.local()
        self._readers = threading.local()
        self._probes_lock = threading.Lock()
        self._append_lock = ProcessLock()
        if url.startswith("sqlite"):
            # WAL + synchronous=NORMAL: a committed append survives a crash of any process
            # (the restart test kills the hub with SIGKILL); only an OS crash or power loss
            # may lose the last appends. FULL would fsync every message (~ms each).
            event.listen(self.engine, "connect", _sqlite_normal_sync)
        _meta.create_all(self.engine)
        with self.engine.begin() as c:
            epoch = c.scalar(select(_info.c.value).where(_info.c.key == "epoch"))
            if epoch is None:
                epoch = uuid.uuid4().hex[:12]
                c.execute(insert(_info).values(key="epoch", value=epoch))
        self.epoch: str = epoch

    def dispose(self) -> None:
        self.engine.dispose()
        with self._probes_lock:
            for probe in self._probes:
                probe.close()
            self._probes.clear()
        self._writers = threading.local()
        self._readers = threading.local()

    def change_probe(self) -> Callable[[], bool] | None:
        """A check, cheap enough for the event loop, of whether anything was committed to
        the log since the previous check (the first check says yes).

        SQLite only: ``PRAGMA data_version`` on a connection of its own, which changes
        when any other connection — any process — commits; it reads the WAL index in
        shared memory, no query plan, no I/O (~10 µs).  The bus polls with it instead of
        running a tail query in a worker thread every few milliseconds (an idle hub
        polling every 2 ms spent ~40 % of a core on those).  None for other databases
        and for an in-memory SQLite, whose connections do not share data.
        """
        con = self._own_connection()
        if con is None:
            return None
        seen: list[int | None] = [None]

        def changed() -> bool:
            version = int(con.execute("PRAGMA data_version").fetchone()[0])
            if version == seen[0]:
                return False
            seen[0] = version
            return True

        return changed

    def change_watch(self) -> Watch | None:
        """A descriptor that becomes readable when any process writes the log's file
        (SQLite files on Linux, see :mod:`eventlog.fswatch`); None: poll instead."""
        path = self._sqlite_file()
        return watch(Path(path)) if path else None

    def loop_head(self) -> Callable[[str], int] | None:
        """``head`` where it may run in the event loop: on a SQLite file it is a point read
        on the calling thread's plain connection (~5 µs, cheaper than the hop to a worker
        thread it replaces; a subscribe reads the head twice).  None otherwise."""
        return self.head if self._sqlite_file() is not None else None

    def loop_tail(self) -> Callable[[int, int], list[Message]] | None:
        """``tail`` for the event loop: the same query on a plain connection of its own,
        ~50 µs for a few messages, where the worker-thread ``tail`` waits for the GIL
        while the loop is busy fanning out (from append to fan-out under load, poll
        included: 4 ms median and 16 ms p99 with the thread, 1–1.5 ms median here).
        Callers keep ``limit`` small and read larger backlogs with ``tail``.  SQLite files
        only, like :meth:`change_probe`."""
        con = self._own_connection()
        if con is None:
            return None
        sql = (
            "SELECT seq, channel, offset, ts, type, data, source FROM log_messages"
            " WHERE seq > ? ORDER BY seq LIMIT ?"
        )
        epoch = self.epoch

        def tail(after_seq: int, limit: int) -> list[Message]:
            return [
                Message(
                    int(seq),
                    channel,
                    int(offset),
                    epoch,
                    _sqlite_ts(ts),
                    type_,
                    json.loads(data),
                    json.loads(source) if source else {},
                )
                for seq, channel, offset, ts, type_, data, source in con.execute(
                    sql, (after_seq, limit)
                )
            ]

        return tail

    def _sqlite_file(self) -> str | None:
        """The log's SQLite file, if it is one (not another database, not in memory)."""
        path = self.engine.url.database if self.engine.url.get_backend_name() == "sqlite" else None
        return path if path and path != ":memory:" else None

    def _own_connection(self) -> sqlite3.Connection | None:
        """A plain sqlite3 connection to the log's file (None: not a SQLite file)."""
        path = self._sqlite_file()
        if path is None:
            return None
        con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with self._probes_lock:
            self._probes.append(con)
        return con

    def verify(self, after_seq: int, epoch: str) -> str:
        """The log's epoch now.  A SQL log keeps its epoch in its own database, which a
        process cannot lose under it while it has the file open: always ``self.epoch``."""
        return self.epoch

    def append(
        self,
        channel: str,
        type: str,
        data: dict[str, Any],
        source: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> Message:
        if self._sqlite_file() is not None:
            return self._append_sqlite(channel, type, data, source, event_id)
        ts = datetime.now(UTC)
        with self.engine.begin() as c:
            if event_id is not None:
                known = c.execute(
                    select(_event_ids).where(_event_ids.c.event_id == event_id).with_for_update()
                ).first()
                if known is not None:
                    return self._known(
                        known.seq, known.channel, known.offset, known.ts, type, data, source
                    )
            # The row update takes the write lock, so offsets are allocated one at a time.
            offset = c.scalar(
                update(_channels)
                .where(_channels.c.name == channel)
                .values(last_offset=_channels.c.last_offset + 1)
                .returning(_channels.c.last_offset)
            )
            if offset is None:
                offset = 1
                c.execute(insert(_channels).values(name=channel, last_offset=1))
            seq = c.execute(
                insert(_messages).values(
                    channel=channel,
                    offset=offset,
                    ts=ts,
                    type=type,
                    data=json.dumps(data, ensure_ascii=False, default=str),
                    source=json.dumps(source or {}, ensure_ascii=False),
                )
            ).inserted_primary_key
            assert seq is not None
            if event_id is not None:
                c.execute(
                    insert(_event_ids).values(
                        event_id=event_id, channel=channel, offset=offset, seq=seq[0], ts=ts
                    )
                )
        return Message(int(seq[0]), channel, int(offset), self.epoch, ts, type, data, source or {})

    __call__ = append

    def _known(
        self,
        seq: int,
        channel: str,
        offset: int,
        ts: datetime | str,
        type: str,
        data: dict[str, Any],
        source: dict[str, Any] | None,
    ) -> Message:
        """The message an event id was appended as before (its payload is the caller's:
        an event id names one payload)."""
        when = _sqlite_ts(ts) if isinstance(ts, str) else _aware(ts)
        return Message(int(seq), channel, int(offset), self.epoch, when, type, data, source or {})

    def _append_sqlite(
        self,
        channel: str,
        type: str,
        data: dict[str, Any],
        source: dict[str, Any] | None,
        event_id: str | None = None,
    ) -> Message:
        """``append`` on a plain sqlite3 connection of this thread (D33).

        The same two statements as the SQLAlchemy path, in one ``BEGIN IMMEDIATE``
        transaction: ~0.03 ms against ~0.3 ms, which every publish pays before any
        subscriber can see the message.  A busy log (another process writing) is waited
        for in steps of at most 2 ms, up to the engine's 30 s, instead of SQLite's busy
        handler, whose sleeps of 1, 2, 5, 10 … ms kept an append waiting ~18 ms for a
        lock held a few.
        """
        con = self._writer()
        text = json.dumps(data, ensure_ascii=False, default=str)
        src = json.dumps(source or {}, ensure_ascii=False)
        # Threads of this process queue on a lock of their own; only other processes are
        # waited for in the busy steps (a burst of connections, each publishing its
        # presence from a worker thread, spent its time in those sleeps; D35).
        with self._append_lock:
            _begin_immediate(con)
            ts = datetime.now(UTC)  # under the lock: times follow the log's order
            try:
                if event_id is not None:
                    known = con.execute(_KNOWN_EVENT, (event_id,)).fetchone()
                    if known is not None:
                        con.execute("ROLLBACK")
                        seq0, channel0, offset0, ts0 = known
                        return self._known(seq0, channel0, offset0, ts0, type, data, source)
                row = con.execute(_NEXT_OFFSET, (channel,)).fetchone()
                if row is None:
                    offset = 1
                    con.execute(_NEW_CHANNEL, (channel,))
                else:
                    offset = int(row[0])
                stamp = ts.strftime("%Y-%m-%d %H:%M:%S.%f")
                cur = con.execute(_INSERT_MESSAGE, (channel, offset, stamp, type, text, src))
                seq = cur.lastrowid
                if event_id is not None:
                    con.execute(_NEW_EVENT, (event_id, channel, offset, seq, stamp))
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        assert seq is not None
        return Message(int(seq), channel, offset, self.epoch, ts, type, data, source or {})

    def _reader(self) -> sqlite3.Connection:
        """This thread's plain connection for point reads (SQLite files only; it waits for
        a busy database like the engine's, where the writer's does not wait at all)."""
        return self._thread_connection(self._readers)

    def _writer(self) -> sqlite3.Connection:
        """This thread's plain connection for appends (SQLite files only)."""
        return self._thread_connection(
            self._writers, "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=0"
        )

    def _thread_connection(self, slot: threading.local, *pragmas: str) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(slot, "con", None)
        # A connection is not carried across a fork: a child makes its own.
        if con is None or slot.pid != os.getpid():
            con = self._own_connection()
            assert con is not None
            for pragma in pragmas:
                con.execute(pragma)
            slot.con, slot.pid = con, os.getpid()
        return con

    def _message(self, row: Any) -> Message:
        return Message(
            seq=row.seq,
            channel=row.channel,
            offset=row.offset,
            epoch=self.epoch,
            ts=_aware(row.ts),
            type=row.type,
            data=json.loads(row.data),
            source=json.loads(row.source) if row.source else {},
        )

    def read(self, channel: str, after: int = 0, limit: int = 1000) -> list[Message]:
        """Messages of one channel with offset > ``after``, in offset order."""
        q = (
            select(_messages)
            .where(_messages.c.channel == channel, _messages.c.offset > after)
            .order_by(_messages.c.offset)
            .limit(limit)
        )
        with self.engine.connect() as c:
            return [self._message(r) for r in c.execute(q)]

    def tail(self, after_seq: int, limit: int = 1000, block_s: float = 0) -> list[Message]:
        """Messages of every channel with seq > ``after_seq``, in append order.
        (``block_s`` is for backends that can wait; this one returns at once.)"""
        q = (
            select(_messages)
            .where(_messages.c.seq > after_seq)
            .order_by(_messages.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as c:
            return [self._message(r) for r in c.execute(q)]

    def last_seq(self) -> int:
        with self.engine.connect() as c:
            return int(c.scalar(select(func.coalesce(func.max(_messages.c.seq), 0))) or 0)

    def head(self, channel: str) -> int:
        """The latest offset of a channel (0 when nothing was ever published)."""
        if self._sqlite_file() is not None:
            # On a plain connection of this thread: ~15 µs against ~0.3 ms through the
            # engine, and every subscribe asks twice (D35).
            row = self._reader().execute(_HEAD, (channel,)).fetchone()
            return int(row[0]) if row else 0
        with self.engine.connect() as c:
            v = c.scalar(select(_channels.c.last_offset).where(_channels.c.name == channel))
            return int(v or 0)

    def first_retained(self, channel: str) -> int:
        """The oldest offset still held for a channel (head + 1 when none is held)."""
        with self.engine.connect() as c:
            v = c.scalar(select(func.min(_messages.c.offset)).where(_messages.c.channel == channel))
        return int(v) if v is not None else self.head(channel) + 1

    def _oldest(self, channel: str) -> tuple[int, datetime] | None:
        """Offset and time of a channel's oldest held message (None: none held).

        Read through the channel index in log order, without the write lock: the ops
        tick asks it of every channel every few seconds, and a DELETE that finds nothing
        would still take the lock every publisher waits for (D33).
        """
        with self.engine.connect() as c:
            row = c.execute(
                select(_messages.c.offset, _messages.c.ts)
                .where(_messages.c.channel == channel)
                .order_by(_messages.c.seq)
                .limit(1)
            ).first()
        return None if row is None else (int(row.offset), _aware(row.ts))

    def trim(self, channel: str, keep_last: int) -> int:
        """Drop all but the newest ``keep_last`` messages of a channel; returns how many."""
        head = self.head(channel)
        oldest = self._oldest(channel)
        if oldest is None or oldest[0] > head - keep_last:
            return 0
        with self.engine.begin() as c:
            res = c.execute(
                delete(_messages).where(
                    _messages.c.channel == channel, _messages.c.offset <= head - keep_last
                )
            )
            c.execute(
                delete(_event_ids).where(
                    _event_ids.c.channel == channel, _event_ids.c.offset <= head - keep_last
                )
            )
            return int(res.rowcount or 0)

    def channels(self) -> list[str]:
        """Every channel ever published to."""
        with self.engine.connect() as c:
            return [r[0] for r in c.execute(select(_channels.c.name).order_by(_channels.c.name))]

    def trim_before(self, channel: str, before: datetime) -> int:
        """Drop a channel's messages older than ``before``, but never its latest one:
        the head offset stays readable so ``first_retained`` stays meaningful."""
        head = self.head(channel)
        oldest = self._oldest(channel)
        if oldest is None or oldest[0] >= head or oldest[1] >= before:
            return 0  # appends are stamped in log order: nothing older is held
        with self.engine.begin() as c:
            res = c.execute(
                delete(_messages).where(
                    _messages.c.channel == channel,
                    _messages.c.ts < before,
                    _messages.c.offset < head,
                )
            )
            c.execute(
                delete(_event_ids).where(
                    _event_ids.c.channel == channel,
                    _event_ids.c.ts < before,
                    _event_ids.c.offset < head,
                )
            )
            return int(res.rowcount or 0)

    def append_many(
        self,
        channel: str,
        type: str,
        items: list[dict[str, Any]],
        source: dict[str, Any] | None = None,
    ) -> tuple[int, int]:
        """Append several messages to one channel in a single transaction: all or none.

        Returns the first and last offset given.  Live feeds use it so that an
        acknowledged batch is wholly in the log and a failed one wholly absent.
        """
        if not items:
            head = self.head(channel)
            return head + 1, head
        ts = datetime.now(UTC)
        n = len(items)
        src = json.dumps(source or {}, ensure_ascii=False)
        with self.engine.begin() as c:
            last = c.scalar(
                update(_channels)
                .where(_channels.c.name == channel)
                .values(last_offset=_channels.c.last_offset + n)
                .returning(_channels.c.last_offset)
            )
            if last is None:
                last = n
                c.execute(insert(_channels).values(name=channel, last_offset=n))
            first = int(last) - n + 1
            c.execute(
                insert(_messages),
                [
                    {
                        "channel": channel,
                        "offset": first + i,
                        "ts": ts,
                        "type": type,
                        "data": json.dumps(item, ensure_ascii=False, default=str),
                        "source": src,
                    }
                    for i, item in enumerate(items)
                ],
            )
        return first, int(last)
