"""The in-process event bus: fan-out of the durable event log to live subscribers.

Publishing appends to the :class:`~eventlog.sqllog.EventLog` (the only source
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
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from itertools import pairwise
from typing import Any

from catalog import requestid
from eventlog.backend import LogBackend, redacted_url
from eventlog.message import Message
from hub.live.frames import ws_text_frame
from hub.live.outage import Outage, backoff_s
from hub.live.subscription import Subscription
from hub.observability import metrics

log = logging.getLogger(__name__)


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
                            blob = blobs[i] = b"".join([m.framed(ws_text_frame) for m in buf[i:]])
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
                await asyncio.sleep(self._backoff())

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
                await asyncio.sleep(self._backoff())
