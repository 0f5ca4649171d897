"""One consumer's view of the bus: the channels it follows, the offset it has of each, the
queue its sender drains, and the notices it is given (history gaps, epoch changes).

A subscription is filled by the bus's fan-out (:mod:`hub.live.bus`) and, for a replay or a
gap, by reading the missing range from the log itself, so delivery is in order with no gap
and no duplicate; it never reaches into the bus beyond registering and spawning its fills.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import orjson

from eventlog.backend import LogBackend
from eventlog.message import Message
from hub.live.frames import ws_text_frame

log = logging.getLogger(__name__)


class Fanout(Protocol):
    """What a subscription needs of its bus (:class:`hub.live.bus.Bus`): the log it reads
    gaps from, which epoch and generation the bus is in, the channels' heads, and its
    registry of subscribers and tasks.  Written down here so that the subscription does not
    import the bus that imports it."""

    log: LogBackend
    _generation: int
    _seq: int

    @property
    def epoch(self) -> str: ...

    async def head(self, channel: str) -> int: ...

    def suspect(self) -> None: ...

    def _register(self, channel: str, sub: Subscription) -> None: ...

    def _unregister(self, channel: str, sub: Subscription) -> None: ...

    def _spawn(self, coro: Any) -> None: ...


@dataclass(frozen=True)
class Notice:
    """A control notice for one subscriber, e.g. history no longer retained."""

    type: str
    channel: str
    data: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        if not self.channel:  # connection-level notices (heartbeat) name no channel
            return {"type": self.type, **self.data}
        return {"type": self.type, "channel": self.channel, **self.data}

    @cached_property
    def ws_frame(self) -> bytes:
        """The notice as one websocket text frame, made once for every connection it goes
        to (a heartbeat goes to all of them)."""
        return ws_text_frame(orjson.dumps(self.to_wire(), default=str))


class SlowConsumer(Exception):
    """A subscriber's queue overflowed: it is dropped rather than slowing others."""


class Subscription:
    """One consumer's view of some channels, with per-channel delivered offsets."""

    #: Reads of messages of another epoch a fill retries (50 ms apart) before it takes them
    #: for history the current epoch does not have.
    STRANGER_TRIES = 100

    def __init__(self, bus: Fanout, queue_size: int) -> None:
        self._bus = bus
        # Items for the sender task, when they cannot be written at once (a deque and an
        # event rather than an asyncio.Queue: the fan-out tests emptiness per subscriber
        # on every message, and an attribute's truth is the cheapest test there is).
        self._queue: deque[Message | Notice] = deque()
        self._queue_max = queue_size
        self._arrived = asyncio.Event()
        self.last: dict[str, int] = {}
        # Per-channel predicate: a message it rejects is skipped (its offset still counts).
        self.filters: dict[str, Callable[[Message], bool]] = {}
        self._filling: set[str] = set()
        # Channels whose fill let a newer message go by: it reads again before it ends.
        self._passed_by: set[str] = set()
        self.overflowed = False
        # Set on overflow, so a sender stuck writing to a reader that stopped reading
        # can be closed without waiting for its next get().
        self.overflow = asyncio.Event()
        # A synchronous writer to the client's socket, when the server allows one: with an
        # empty queue, items go straight out (as websockets' broadcast does) instead of
        # through the queue and a task switch.  It returns False once the socket's write
        # buffer is over its bound: the consumer is too slow.
        # Several items at once are written with one call (one socket write per batch).
        self.sink: Callable[[Sequence[Message | Notice]], bool] | None = None
        # True while the client's socket holds a lot of unsent data: a replay waits for it
        # to drain, so catching up on a long history is paced by the reader, not refused.
        self.pressure: Callable[[], bool] | None = None
        # Every log message up to this seq has been offered to this subscription (the
        # fan-out's bookmark; offsets, not this, decide what is delivered).  Messages read
        # before it was made were appended before its channels' heads were read.
        self.seen = bus._seq
        # The fan-out's fast path, when the server lets it write pre-built frames to the
        # client's socket itself (see :meth:`write_frames`).
        self._write: Callable[[bytes], object] | None = None
        self._closing: Callable[[], bool] = bool
        self.verbatim: Callable[[Sequence[Message]], bool] | None = None
        self.verbatim_key: Hashable = None
        # True while every channel of this subscription can take pre-built frames as they
        # come — a frame writer, no filter, no fill in progress, nothing queued, not too
        # slow — so that the fan-out tests one attribute per subscriber, not five.
        # :meth:`_settle` recomputes it on each of those changes.
        self.plain = False

    def write_frames(
        self,
        write: Callable[[bytes], object],
        closing: Callable[[], bool],
        verbatim: Callable[[Sequence[Message]], bool] | None = None,
        verbatim_key: Hashable = None,
    ) -> None:
        """Let the fan-out write pre-built frames (``Message.framed``, concatenated) to the
        client's socket itself, as websockets' ``broadcast`` does: ``write`` takes them (a
        transport's ``write``); once ``closing()`` is true nothing more is written.  The
        caller reports a reader that lets too much pile up with :meth:`too_slow` (the
        websocket endpoint does it from the transport's flow control, as the write that
        crosses the limit returns).  ``verbatim`` says whether messages go to this
        subscriber exactly as published (no masking); its answers are shared by the
        subscriptions of one ``verbatim_key``."""
        self._write, self._closing = write, closing
        self.verbatim, self.verbatim_key = verbatim, verbatim_key
        self._settle()

    def too_slow(self) -> None:
        """The reader is too slow: drop it rather than hold the others up."""
        self._overflowed()

    def _settle(self) -> None:
        self.plain = (
            self._write is not None
            and not self.overflowed
            and not self.filters
            and not self._filling
            and not self._queue
        )

    async def add(
        self,
        channel: str,
        since: int | None = None,
        accept: Callable[[Message], bool] | None = None,
    ) -> int:
        """Subscribe to a channel; replay from after ``since`` (None: live only), passing
        only messages ``accept`` takes.  Returns the channel's current head offset."""
        bus = self._bus
        for _ in range(3):  # a head read across an epoch change is of the old epoch
            generation = bus._generation
            head = await bus.head(channel)
            if generation == bus._generation:
                break
        start = head if since is None else max(0, since)
        self.last[channel] = start
        if accept is None:
            self.filters.pop(channel, None)
        else:
            self.filters[channel] = accept
        self._settle()
        bus._register(channel, self)
        if start < head:
            self._schedule_fill(channel)
        else:
            # A message appended after the head was read may have been read and handed
            # round before this subscription was registered: look again, and fill.
            later = await bus.head(channel)
            if later > self.last.get(channel, later):
                self._schedule_fill(channel)
        return head

    def remove(self, channel: str) -> None:
        self.last.pop(channel, None)
        self.filters.pop(channel, None)
        self._settle()
        self._bus._unregister(channel, self)

    def close(self) -> None:
        for channel in list(self.last):
            self.remove(channel)

    def _put(self, item: Message | Notice) -> None:
        self._put_many((item,))

    def _overflowed(self) -> None:
        self.overflowed = True
        self.plain = False
        self.overflow.set()

    def _put_many(self, items: Sequence[Message | Notice]) -> None:
        if not items:
            return
        # Order holds: the queue is empty only once its sender has written everything.
        queue = self._queue
        if self.sink is not None and not self.overflowed and not queue:
            if not self.sink(items):
                self._overflowed()
            return
        for item in items:
            if len(queue) >= self._queue_max:
                # A full queue means the reader is behind, not blocked: its next get() raises.
                self._overflowed()
                break
            queue.append(item)
        self.plain = False
        self._arrived.set()

    def _behind(self) -> bool:
        if len(self._queue) > self._queue_max // 2:
            return True
        return self.pressure is not None and self.pressure()

    def notify(self, notice: Notice) -> None:
        """Send a control notice (e.g. a heartbeat) between messages: its shared frame
        straight to the socket when nothing is queued, else through the queue."""
        if self.plain:
            if not self._closing():
                self._write(notice.ws_frame)  # type: ignore[misc]  # plain: it is set
            return
        self._put(notice)

    def _deliver(self, msg: Message) -> None:
        self.last[msg.channel] = msg.offset
        accept = self.filters.get(msg.channel)
        if accept is None or accept(msg):
            self._put(msg)

    def offer_many(self, msgs: Sequence[Message]) -> None:
        """New messages of subscribed channels, in log order (the fan-out's share): those next
        in line go out together; a gap in a channel is filled from the log instead."""
        out: list[Message | Notice] = []
        for msg in msgs:
            last = self.last.get(msg.channel)
            if last is None or msg.offset <= last:
                continue
            if msg.channel in self._filling:  # the fill delivers it; it must know to look
                self._passed_by.add(msg.channel)
                continue
            if msg.offset != last + 1:
                self._schedule_fill(msg.channel)
                continue
            self.last[msg.channel] = msg.offset
            accept = self.filters.get(msg.channel)
            if accept is None or accept(msg):
                out.append(msg)
        self._put_many(out)

    def _schedule_fill(self, channel: str) -> None:
        if channel in self._filling:
            return
        self._filling.add(channel)
        self.plain = False
        self._bus._spawn(self._fill(channel))

    def _epoch_changed(self, old: str, new: str) -> None:
        """The log started over (:meth:`Bus._reset`): every channel is told, then goes on
        from the new epoch's first message — which, in a log that started over empty, is
        the first one this subscriber has not seen."""
        self.seen = 0
        for channel in list(self.last):
            self.last[channel] = 0
            self._put(Notice("epoch_changed", channel, {"epoch": new, "previous_epoch": old}))
            self._schedule_fill(channel)

    def _gap(self, channel: str, after: int, first: int) -> None:
        """History after ``after`` up to ``first`` is not there: say so, and go on from it."""
        self._put(
            Notice("history_gap", channel, {"requested_after": after, "first_available": first})
        )
        self.last[channel] = first - 1

    async def _fill(self, channel: str) -> None:
        """Read from the log everything after the last delivered offset, up to its head.

        Whatever the log no longer holds is announced as a ``history_gap``: the part
        retention dropped, and a hole a log that lost data may have (a Redis that lost
        writes, keys evicted) — rather than waiting for offsets that will never come.  A
        read made across an epoch change (:meth:`Bus._reset`) is dropped and made again.
        """
        bus = self._bus
        strangers = 0
        try:
            while channel in self.last and not self.overflowed:
                while channel in self.last and self._behind():
                    await asyncio.sleep(0.005)
                generation = bus._generation
                after = self.last.get(channel)
                if after is None:
                    break
                first = await asyncio.to_thread(bus.log.first_retained, channel)
                if generation != bus._generation:
                    continue
                if after + 1 < first:
                    self._gap(channel, after, first)
                    after = first - 1
                self._passed_by.discard(channel)
                batch = await asyncio.to_thread(bus.log.read, channel, after, 500)
                if generation != bus._generation:
                    continue
                if batch and batch[-1].epoch != bus.epoch:
                    # Read from a log that started over, before the bus knew: not these.
                    # (Bounded: messages that stay of another epoch after the bus has had
                    # time to verify the log are history this epoch does not have.)
                    strangers += 1
                    if strangers < self.STRANGER_TRIES:
                        bus.suspect()
                        await asyncio.sleep(0.05)
                        continue
                    log.error("%s holds messages of another epoch; announced as a gap", channel)
                    head = await asyncio.to_thread(bus.log.head, channel)
                    if generation == bus._generation and self.last.get(channel) == after:
                        self._gap(channel, after, head + 1)
                    break
                strangers = 0
                paused = False
                for msg in batch:
                    last = self.last.get(channel)
                    if last is None:
                        break
                    if msg.offset <= last:
                        continue
                    if self._behind():  # let the reader catch up; read on from here later
                        paused = True
                        break
                    if msg.offset != last + 1:
                        self._gap(channel, last, msg.offset)
                    self._deliver(msg)
                if len(batch) < 500 and not paused:
                    head = await asyncio.to_thread(bus.log.head, channel)
                    if generation != bus._generation:
                        continue
                    last = self.last.get(channel, head)
                    if last < head and not batch:
                        # Nothing after ``last`` although the head is beyond it: unless it
                        # was appended just now, those offsets are lost.  Look once more
                        # (the head was read before this read, so this one would see them).
                        again = await asyncio.to_thread(bus.log.read, channel, last, 1)
                        if generation != bus._generation:
                            continue
                        if not again and self.last.get(channel) == last:
                            self._gap(channel, last, head + 1)
                            last = head
                    # A message appended after that head read may have been offered live
                    # meanwhile and let go by: then read once more.
                    if last >= head and channel not in self._passed_by:
                        break
        finally:
            self._filling.discard(channel)
            self._passed_by.discard(channel)
            self._settle()

    async def get(self) -> Message | Notice:
        queue = self._queue
        while not queue:
            self._arrived.clear()
            await self._arrived.wait()
        item = queue.popleft()
        if self.overflowed:
            raise SlowConsumer()
        if not queue:
            self._settle()
        return item

    def get_ready(self) -> list[Message | Notice]:
        """Everything already queued, without waiting (lets a sender drain in one go)."""
        out = list(self._queue)
        self._queue.clear()
        if self.overflowed:
            raise SlowConsumer()
        self._settle()
        return out

    def __aiter__(self) -> AsyncIterator[Message | Notice]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Message | Notice]:
        while True:
            yield await self.get()
