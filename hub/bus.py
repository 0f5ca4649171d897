"""The in-process event bus: fan-out of the durable event log to live subscribers.

Publishing appends to the :class:`~catalog.eventlog.EventLog` (the only source
of truth) and wakes the tailer; the tailer also polls, so messages appended by
other processes (a CLI ingest, an Airflow task) reach this process's
subscribers too.  Each subscription tracks the last offset it delivered per
channel: a message that is not the next one (a gap, or a replay request) makes
it read the missing range from the log, so delivery is in order with no gap and
no duplicate, live or after reconnect.

Fan-out is a task of its own that goes round the subscribers of the channels in
its buffer of tailed messages, handing each everything it has not been offered
yet.  The tailer keeps reading while it goes round (the fan-out yields every few
subscribers), so a message read mid-round reaches the rest of that round's
subscribers together with the one before it, and the others on the next round:
every subscriber gets it within one round, not after the round in progress plus
a round of its own.  A subscriber that takes frames as they are (no filter, no
gap, nothing queued, the payload unmasked for it) gets the buffered messages'
pre-built frames in one write, shared with every subscriber at the same place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from bisect import bisect_right
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any

import orjson

from catalog import requestid
from catalog.eventlog import LogBackend, Message, redacted_url, ws_text_frame
from hub.observability import metrics

log = logging.getLogger(__name__)


def backoff_s(failures: int, base: float, cap: float) -> float:
    """How long to wait after ``failures`` failures in a row: doubling from ``base`` up to
    ``cap``, times a random factor in [0.5, 1.5) so that many processes (or subscribers)
    that lost the same server do not come back at the same instant."""
    return float(min(cap, base * 2 ** max(0, failures - 1)) * (0.5 + random.random()))


class Outage:
    """The state of a dependency that fails and comes back: one warning when it starts,
    one every ``every_s`` while it lasts, one when it ends (never one per retry)."""

    def __init__(self, what: str, every_s: float = 30.0) -> None:
        self.what, self.every_s = what, every_s
        self.failures = 0
        self._since = 0.0
        self._said = 0.0

    def failed(self, err: BaseException) -> None:
        now = time.monotonic()
        self.failures += 1
        if self.failures == 1:
            self._since = self._said = now
            log.warning("%s unavailable (%s); retrying with backoff", self.what, err)
        elif now - self._said >= self.every_s:
            self._said = now
            log.warning(
                "%s still unavailable after %.0f s and %d attempts (%s)",
                self.what,
                now - self._since,
                self.failures,
                err,
            )

    def ok(self) -> None:
        if self.failures:
            log.warning(
                "%s available again after %.1f s (%d failed attempts)",
                self.what,
                time.monotonic() - self._since,
                self.failures,
            )
            self.failures = 0


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

    def __init__(self, bus: Bus, queue_size: int) -> None:
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
        """Let the fan-out write pre-built frames (``Message.ws_frame``, concatenated) to the
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


class Bus:
    """Fan-out of one event log to subscriptions in this process."""

    #: Subscribers handed their share between two yields to the event loop (so that the
    #: tailer, commands and heartbeats run while a round goes on).
    ROUND_SLICE = 64
    #: Tailed messages held for the fan-out before the tailer waits for it.
    BUFFER = 10_000
    #: A poll that finds new messages reads up to this many in the event loop (a local
    #: log's ``loop_tail``); more are read in a worker thread.
    QUICK_READ = 64
    #: Poll period right after the file watch saw a write whose commit was not visible yet.
    HOT_POLL_S = 0.001
    #: A log on a server (Redis) is asked at least this often whether it is still the same
    #: log (:meth:`LogBackend.verify`), and after every failure before reading on.
    VERIFY_S = 1.0
    #: Longest wait between two attempts while the log's server is unreachable.
    MAX_BACKOFF_S = 5.0

    def __init__(self, log: LogBackend, *, poll_s: float = 0.2, queue_size: int = 10_000) -> None:
        self.log = log
        self.poll_s = poll_s
        self.queue_size = queue_size
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._wake: asyncio.Event | None = None
        self._woken = False  # set by nudge (a publish in this process), not by the timer
        self._written = False  # set by the file watch: some process wrote the log
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0  # the last seq read from the log
        # Read, not yet offered to every subscriber: messages, their seqs and (while all of
        # them are of one channel, offsets in a row) that channel.
        self._buf: list[Message] = []
        self._seqs: list[int] = []
        self._single: str | None = None
        self._blobs: dict[int, bytes] = {}  # buffer index -> its messages' frames, joined
        self._answers: dict[tuple[Hashable, int], bool] = {}  # (verbatim key, index) -> answer
        self._more: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._fan_task: asyncio.Task[None] | None = None
        self._loop_head: Callable[[str], int] | None = None
        # The epoch this bus delivers (None until read from the log).  It changes only in
        # :meth:`_reset`, which also moves the generation on: anything read from the log
        # before that (a fill's read, a head) belongs to the old epoch and is dropped.
        self._epoch: str | None = None
        self._generation = 0
        self._suspect = False  # something looked like another epoch: verify before reading
        self.outage = Outage(f"event log {redacted_url(log.url)}")

    @property
    def epoch(self) -> str:
        """The epoch of every offset this bus hands out (welcome, subscribed, messages)."""
        return self._epoch if self._epoch is not None else self.log.epoch

    @property
    def ready(self) -> bool:
        """Whether the bus knows where the log is (a hub started while the log's server was
        down does not, until it is back: new websocket connections are refused till then)."""
        return self._epoch is not None

    def _position(self) -> tuple[int, str]:
        return self.log.last_seq(), self.log.epoch

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._more = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        try:
            self._seq, self._epoch = await asyncio.to_thread(self._position)
        except Exception as e:
            if not self.log.blocking_tail:
                raise
            # A log on a server that is down: the tailer finds it when it is back.
            self.outage.failed(e)
        self._loop_head = self.log.loop_head()
        self._task = asyncio.create_task(self._tail(), name="blockhub-bus-tail")
        self._fan_task = asyncio.create_task(self._fan(), name="blockhub-bus-fan-out")

    async def stop(self) -> None:
        tasks = [self._task, self._fan_task, *self._tasks]
        for t in tasks:
            if t is not None:
                t.cancel()
        for t in tasks:
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        self._task = self._fan_task = None

    async def head(self, channel: str) -> int:
        """The channel's latest offset: read in the event loop where the log allows it
        (a local SQLite file), else in a worker thread."""
        if self._loop_head is not None:
            return self._loop_head(channel)
        return await asyncio.to_thread(self.log.head, channel)

    def subscription(self) -> Subscription:
        return Subscription(self, self.queue_size)

    def subscribers(self, channel: str) -> int:
        return len(self._subs.get(channel, ()))

    def subscribers_by_kind(self) -> dict[str, int]:
        """Subscriptions of this process per channel kind (``dataset``, ``feed``, …): the
        ``blockhub_ws_subscribers`` gauge."""
        out: dict[str, int] = defaultdict(int)
        for channel, subs in list(self._subs.items()):
            out[channel.partition(":")[0]] += len(subs)
        return dict(out)

    @property
    def buffered(self) -> int:
        """Messages read from the log and not yet offered to every subscriber."""
        return len(self._buf)

    def _register(self, channel: str, sub: Subscription) -> None:
        self._subs[channel].add(sub)

    def _unregister(self, channel: str, sub: Subscription) -> None:
        subs = self._subs.get(channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[channel]

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def publish(
        self,
        channel: str,
        type: str,
        data: dict[str, Any],
        source: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> Message:
        """Append to the log and wake the tailer (safe to call from any thread).  With an
        ``event_id`` the append is made once (the catalog's outbox)."""
        source = requestid.stamp(dict(source or {}))  # the request that caused it, if any
        msg = self.log.append(channel, type, data, source, event_id=event_id)
        self.nudge()
        return msg

    __call__ = publish

    async def publish_async(
        self, channel: str, type: str, data: dict[str, Any], source: dict[str, Any] | None = None
    ) -> Message:
        source = requestid.stamp(dict(source or {}))
        msg = await asyncio.to_thread(self.log.append, channel, type, data, source)
        self.nudge()
        return msg

    def nudge(self) -> None:
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._nudged)

    def _nudged(self) -> None:
        assert self._wake is not None
        self._woken = True
        self._wake.set()

    def _backoff(self) -> float:
        return backoff_s(self.outage.failures, self.poll_s, self.MAX_BACKOFF_S)

    def suspect(self) -> None:
        """Something read from the log was of another epoch: check the log before reading
        on (safe to call from any thread)."""
        self._suspect = True

    def _reset(self, epoch: str) -> None:
        """The log started over in ``epoch``: drop what was read of the old one, tell every
        subscription (``epoch_changed`` on each channel) and read the new one from its
        start.  Runs in the event loop, between two reads of the tailer."""
        assert self._room is not None
        old = self.epoch
        self._epoch = epoch
        self._generation += 1
        self._seq = 0
        self._buf.clear()
        self._seqs.clear()
        self._blobs.clear()
        self._answers.clear()
        self._single = None
        self._room.set()
        subs = {sub for channel_subs in self._subs.values() for sub in channel_subs}
        for sub in subs:
            try:
                sub._epoch_changed(old, epoch)
            except Exception:  # one subscriber's failure must not cost the others
                log.exception("telling a subscriber of the new epoch failed")
        log.warning(
            "event log started over: epoch %s -> %s; %d subscription(s) told and replayed "
            "from the new epoch's start",
            old,
            epoch,
            len(subs),
        )

    def _offer_all(self, msgs: list[Message]) -> None:
        """Hand a tail read to the fan-out (messages in log order)."""
        if not msgs:
            return
        assert self._more is not None and self._room is not None
        metrics.bus_read(msgs)
        self._seq = msgs[-1].seq
        buf = self._buf
        single = msgs[0].channel if not buf else self._single
        for msg in msgs:
            if single is not None and (
                msg.channel != single or (buf and msg.offset != buf[-1].offset + 1)
            ):
                single = None
            buf.append(msg)
            self._seqs.append(msg.seq)
        self._single = single
        self._blobs.clear()
        self._answers.clear()
        self._more.set()
        if len(buf) >= self.BUFFER:
            self._room.clear()

    async def _fan(self) -> None:
        assert self._more is not None
        while True:
            await self._more.wait()
            self._more.clear()
            try:
                await self._rounds()
            except Exception:  # never leave the buffer stuck: go on with the next messages
                log.exception("fan-out failed; going on with the next messages")
                self._drop_through(self._seq)

    async def _rounds(self) -> None:
        """Go round the subscribers of the buffered channels until every one of them has
        been offered everything read so far; after each round, drop what all have seen."""
        step = self.ROUND_SLICE
        generation = self._generation
        while True:
            head = self._seq
            channels = (self._single,) if self._single else {m.channel for m in self._buf}
            subs = [sub for ch in channels for sub in self._subs.get(ch, ())]
            visited = 0
            for k in range(0, len(subs), step):
                if k:
                    await asyncio.sleep(0)  # the tailer may add messages meanwhile
                    if generation != self._generation:
                        return  # the log started over: the buffer and bookmarks are new
                visited += self._serve(subs[k : k + step])
            # Every subscriber of these channels has now seen up to ``head`` at least.
            self._drop_through(head)
            if not visited:
                return

    def _drop_through(self, seq: int) -> None:
        assert self._room is not None
        cut = bisect_right(self._seqs, seq)
        if cut:
            del self._buf[:cut]
            del self._seqs[:cut]
            self._blobs.clear()  # keyed on positions in the buffer
            self._answers.clear()
            buf = self._buf
            single = buf[0].channel if buf else None
            for prev, msg in pairwise(buf):
                if msg.channel != single or msg.offset != prev.offset + 1:
                    single = None
                    break
            self._single = single
        if len(self._buf) < self.BUFFER:
            self._room.set()

    def _serve(self, subs: Sequence[Subscription]) -> int:
        """Hand each of ``subs`` the buffered messages after its bookmark; returns how many
        had anything to take.

        The common case is written out here rather than in calls, since it runs once per
        subscriber per message: the buffer holds one channel, the subscriber is next in
        line on it and takes frames as they are (no filter, no fill, nothing queued, the
        payload unmasked for its principal) — then it gets the buffered messages'
        pre-built frames in one write, joined once and shared by every subscriber at the
        same place.  Anything else goes through :meth:`Subscription.offer_many`.
        """
        head = self._seq
        buf, seqs = self._buf, self._seqs
        n = len(buf)
        channel = self._single
        answers, blobs = self._answers, self._blobs
        # Subscribers at one bookmark share its place in the buffer, and a principal's
        # answer for that place: looked up once per run of them, not per subscriber.
        seen_at, i, want = -1, n, 0
        key_at: Hashable = None
        i_at, same = -1, False
        visited = 0
        for sub in subs:
            seen = sub.seen
            if seen >= head:  # already served (or on several channels)
                continue
            visited += 1
            sub.seen = head
            if seen != seen_at:
                seen_at, i = seen, bisect_right(seqs, seen)
                if i < n:
                    want = buf[i].offset - 1
            if i >= n:
                continue
            try:
                if channel is None:
                    subscribed = sub.last
                    share = [m for m in buf[i:] if m.channel in subscribed]
                    if share:
                        sub.offer_many(share)
                    continue
                if sub.plain and sub.last.get(channel) == want:
                    key = sub.verbatim_key
                    if i != i_at or key != key_at:
                        key_at, i_at = key, i
                        known = answers.get((key, i))
                        if known is None:
                            verbatim = sub.verbatim
                            known = answers[key, i] = verbatim is None or verbatim(buf[i:])
                        same = known
                    if same:
                        sub.last[channel] = buf[-1].offset
                        blob = blobs.get(i)
                        if blob is None:
                            blob = blobs[i] = b"".join([m.ws_frame for m in buf[i:]])
                        if not sub._closing():
                            sub._write(blob)  # type: ignore[misc]  # plain: it is set
                        continue
                sub.offer_many(buf[i:])
            except Exception:  # one subscriber's failure must not cost the others
                log.exception("fan-out to a subscriber failed; its channels catch up")
        return visited

    async def _tail(self) -> None:
        if self.log.blocking_tail:
            await self._tail_blocking()
            return
        assert self._wake is not None
        # With a probe, a poll that finds nothing new costs ~10 µs in the loop instead of a
        # tail query in a worker thread; a publish in this process still wakes at once.
        changed = self.log.change_probe()
        quick = self.log.loop_tail() if changed is not None else None
        pending = True  # read at start, and again after a failed read
        loop = asyncio.get_running_loop()
        assert self._room is not None
        # Where the OS tells when the log's file is written, appends by other processes
        # wake the tailer at once; the poll stays as a safety net.
        watch = self.log.change_watch() if changed is not None else None
        if watch is not None:
            wake = self._wake

            def written() -> None:
                watch.drain()
                self._written = True
                wake.set()

            loop.add_reader(watch.fd, written)
        try:
            await self._poll(changed, quick, pending)
        finally:
            if watch is not None:
                loop.remove_reader(watch.fd)
                watch.close()

    async def _poll(
        self,
        changed: Callable[[], bool] | None,
        quick: Callable[[int, int], list[Message]] | None,
        pending: bool,
    ) -> None:
        assert self._wake is not None and self._room is not None
        loop = asyncio.get_running_loop()
        hot = 0  # polls left at a short period after a write the probe did not show yet
        while True:
            await self._room.wait()  # the fan-out is not too far behind
            # A timer that sets the event, not wait_for: no task is made per poll.
            timer = loop.call_later(self.HOT_POLL_S if hot else self.poll_s, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()
            woken, self._woken = self._woken, False
            written, self._written = self._written, False
            self._wake.clear()
            fresh = changed() if changed is not None else True
            if fresh:
                hot = 0
            elif written:
                # SQLite writes the WAL (which the watch sees) before it publishes the commit
                # in the shared index (which it cannot see): look again shortly.
                hot = 20
            elif hot:
                hot -= 1
            if not (woken or fresh or pending):
                continue
            pending = True
            try:
                if quick is not None:  # a few new messages: read them here, at once
                    msgs = quick(self._seq, self.QUICK_READ)
                    self._offer_all(msgs)
                    if len(msgs) < self.QUICK_READ:
                        pending = False
                        if self.outage.failures:
                            self.outage.ok()
                        continue
                while True:  # a backlog: in a worker thread, 1,000 at a time
                    await self._room.wait()
                    msgs = await asyncio.to_thread(self.log.tail, self._seq, 1000)
                    self._offer_all(msgs)
                    if len(msgs) < 1000:
                        break
                pending = False
                self.outage.ok()
            except Exception as e:  # a failing read must not kill delivery for good
                self.outage.failed(e)
                await asyncio.sleep(
                    backoff_s(self.outage.failures, self.poll_s, self.MAX_BACKOFF_S)
                )

    async def _tail_blocking(self) -> None:
        """Tail a log that can wait for appends (Redis ``XREAD BLOCK``): this process's
        publishes and every other process's arrive the same way, with no polling.

        The log is on a server that may restart, be flushed or fail over under the hub.
        So before reading on after any failure, after a message of another epoch, and at
        least every :attr:`VERIFY_S`, the tailer asks the log whether it is still the same
        log (:meth:`LogBackend.verify`, one round trip in a worker thread); when it is not,
        the bus moves to the new epoch (:meth:`_reset`).  While the server is unreachable
        the tailer retries with exponential backoff and jitter, at most
        :attr:`MAX_BACKOFF_S` apart, logging the outage once (and every 30 s), not per try.
        """
        assert self._room is not None
        next_verify = 0.0
        verified = False  # a mismatch was verified already: do not verify again for it
        while True:
            await self._room.wait()
            try:
                if self._epoch is None:  # the log was down when the bus started
                    self._seq, self._epoch = await asyncio.to_thread(self._position)
                    next_verify = 0.0
                if self._suspect or self.outage.failures or time.monotonic() >= next_verify:
                    self._suspect = False
                    epoch = await asyncio.to_thread(self.log.verify, self._seq, self.epoch)
                    next_verify = time.monotonic() + self.VERIFY_S
                    if epoch != self.epoch:
                        self._reset(epoch)
                        verified = False
                    self.outage.ok()
                msgs = await asyncio.to_thread(self.log.tail, self._seq, 1000, self.poll_s * 5)
                if msgs and msgs[-1].epoch != self.epoch:
                    if not verified:  # appended after the log started over: verify first
                        self._suspect = verified = True
                        continue
                    # Still of another epoch once the log says it is this one: not history
                    # of this epoch; skipped (subscribers' fills announce the hole).
                    log.error("event log: %d message(s) of another epoch skipped", len(msgs))
                    self._seq = msgs[-1].seq
                    continue
                verified = False
                self._offer_all(msgs)
            except Exception as e:
                self.outage.failed(e)
                await asyncio.sleep(
                    backoff_s(self.outage.failures, self.poll_s, self.MAX_BACKOFF_S)
                )
