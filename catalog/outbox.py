"""The outbox: events that belong to a catalog commit, written in that commit's transaction.

A version recorded, a quality result stored, an order moved on, an alert opened: each
is announced on the event log, which lives elsewhere (a SQLite file of its own, Redis).
Appending to the log after the commit loses the event when the log is down or the
process dies in between; appending before it announces what may never be committed.
So the event is a row of the ``outbox`` table, inserted by :func:`stage` in the same
transaction as the change it announces, and :meth:`Outbox.drain` appends pending rows
to the log in order, marking each one published afterwards.

Exactly once: each row has an ``event_id``, and the log makes an append with an event
id once (appending the same id again returns the first message), so a drain that dies
between the append and the mark, or two processes draining at once, publish nothing
twice.  Subscribers find the id in the message's ``source.event_id`` — the key to drop
a repeat by across an epoch change, when offsets start again.

Who drains: the process that staged the event, right after its commit (so an event is
as prompt as a direct publish when the log is up), and a serving hub, continuously
with backoff, for everything left behind (a CLI ingest that ran while the log was down,
a process killed after its commit).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from catalog import requestid
from catalog.errors import unavailable

log = logging.getLogger(__name__)

outbox_meta = MetaData()
outbox_table = Table(
    "outbox",
    outbox_meta,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(32), nullable=False, unique=True),
    Column("channel", String(200), nullable=False),
    Column("type", String(64), nullable=False),
    Column("data", Text, nullable=False),
    Column("source", Text, nullable=False),
    # What the event is about, to find it again (e.g. "version:<dataset>:<n>").
    Column("ref", String(300), nullable=True, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Set once the log holds the event: where (epoch, offset) and when.
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("epoch", String(64), nullable=True),
    Column("offset", BigInteger, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    # A row the log refused for a reason of its own (not an outage) this many times is
    # set aside (``given_up_at``) so that the events after it are not held forever.
    Column("given_up_at", DateTime(timezone=True), nullable=True),
    Index("ix_outbox_pending", "published_at", "given_up_at", "seq"),
)

#: Refusals (not outages) before a row is set aside.
MAX_REFUSALS = 10


@dataclass(frozen=True)
class Event:
    """An event to announce once the transaction it is staged in commits."""

    channel: str
    type: str
    data: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None


def stage(conn: Session | Connection, events: Sequence[Event]) -> list[str]:
    """Insert ``events`` into the outbox on ``conn``'s transaction; returns their ids."""
    if not events:
        return []
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    ids: list[str] = []
    for ev in events:
        event_id = uuid.uuid4().hex
        ids.append(event_id)
        rows.append(
            {
                "event_id": event_id,
                "channel": ev.channel,
                "type": ev.type,
                "data": json.dumps(ev.data, ensure_ascii=False, default=str),
                "source": json.dumps(
                    requestid.stamp({**ev.source, "event_id": event_id}), ensure_ascii=False
                ),
                "ref": ev.ref,
                "created_at": now,
                "attempts": 0,
            }
        )
    conn.execute(insert(outbox_table), rows)
    return ids


Append = Callable[..., Any]
"""The log's append (or the bus's publish): ``(channel, type, data, source, *, event_id)``
returning the stored message (with ``epoch`` and ``offset``)."""


@dataclass(frozen=True)
class Drained:
    published: int
    pending: int
    error: str | None = None


class Outbox:
    """Draining the outbox of one catalog database (one per process and database)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._again = False
        # While the log is down, callers' drains return at once until this moment (the
        # hub's drainer, ``force``, keeps trying with its own backoff).
        self._retry_at = 0.0
        self._failures = 0

    def create(self) -> None:
        outbox_meta.create_all(self.engine)

    def drain(self, append: Append, *, force: bool = False, limit: int = 500) -> Drained:
        """Append every pending event to the log, oldest first; stop at the first failure
        (later events wait: order holds).  Safe to call from any thread and process: a
        call that finds another drain running in this process leaves the work to it (it
        looks again before it stops)."""
        self._again = True
        if not force and time.monotonic() < self._retry_at:
            return Drained(0, -1, "event log unavailable; the hub retries")
        published = 0
        while self._again:
            if not self._lock.acquire(blocking=False):
                return Drained(published, -1)
            try:
                self._again = False
                n, error = self._drain_locked(append, limit)
                published += n
                if error is not None:
                    return Drained(published, self.pending_count(), error)
            finally:
                self._lock.release()
        return Drained(published, 0)

    def _drain_locked(self, append: Append, limit: int) -> tuple[int, str | None]:
        published = 0
        while True:
            rows = self._pending(limit)
            if not rows:
                self._failures, self._retry_at = 0, 0.0
                return published, None
            for row in rows:
                try:
                    msg = append(
                        row.channel,
                        row.type,
                        json.loads(row.data),
                        json.loads(row.source),
                        event_id=row.event_id,
                    )
                except Exception as e:
                    if unavailable(e) is not None:
                        self._failures += 1
                        self._retry_at = time.monotonic() + min(30.0, 0.5 * 2**self._failures)
                        self._note(row.seq, e, refused=False)
                        return published, f"{type(e).__name__}: {e}"
                    log.exception("outbox: the event log refused event %s", row.event_id)
                    self._note(row.seq, e, refused=True)
                    continue  # set aside after MAX_REFUSALS; go on with the next ones
                self._mark(row.seq, msg.epoch, msg.offset)
                published += 1
            if len(rows) < limit:
                self._failures, self._retry_at = 0, 0.0
                return published, None

    def _pending(self, limit: int) -> list[Any]:
        q = (
            select(outbox_table)
            .where(outbox_table.c.published_at.is_(None), outbox_table.c.given_up_at.is_(None))
            .order_by(outbox_table.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as c:
            return list(c.execute(q))

    def _mark(self, seq: int, epoch: str, offset: int) -> None:
        with self.engine.begin() as c:
            c.execute(
                update(outbox_table)
                .where(outbox_table.c.seq == seq)
                .values(published_at=datetime.now(UTC), epoch=epoch, offset=offset)
            )

    def _note(self, seq: int, err: Exception, *, refused: bool) -> None:
        """Count the failed attempt (best effort: the catalog may be what is down)."""
        values: dict[str, Any] = {
            "attempts": outbox_table.c.attempts + 1,
            "last_error": f"{type(err).__name__}: {err}"[:2000],
        }
        try:
            with self.engine.begin() as c:
                c.execute(update(outbox_table).where(outbox_table.c.seq == seq).values(**values))
                if refused:
                    c.execute(
                        update(outbox_table)
                        .where(
                            outbox_table.c.seq == seq,
                            outbox_table.c.attempts >= MAX_REFUSALS,
                        )
                        .values(given_up_at=datetime.now(UTC))
                    )
        except Exception:
            log.debug("outbox: could not record a failed attempt", exc_info=True)

    def pending_count(self) -> int:
        """Events not published yet (not counting those set aside)."""
        q = (
            select(func.count())
            .select_from(outbox_table)
            .where(outbox_table.c.published_at.is_(None), outbox_table.c.given_up_at.is_(None))
        )
        try:
            with self.engine.connect() as c:
                return int(c.scalar(q) or 0)
        except Exception:
            return -1

    def published(self, ref: str) -> tuple[str, int] | None:
        """(epoch, offset) of the published event staged with ``ref``, if it is published."""
        q = select(outbox_table.c.epoch, outbox_table.c.offset).where(
            outbox_table.c.ref == ref, outbox_table.c.published_at.is_not(None)
        )
        with self.engine.connect() as c:
            row = c.execute(q.order_by(outbox_table.c.seq)).first()
        return None if row is None else (str(row.epoch), int(row.offset))

    def purge(self, older_than: timedelta = timedelta(days=7)) -> int:
        """Forget events published longer ago than ``older_than``."""
        cut = datetime.now(UTC) - older_than
        with self.engine.begin() as c:
            res = c.execute(delete(outbox_table).where(outbox_table.c.published_at < cut))
        return int(res.rowcount or 0)
