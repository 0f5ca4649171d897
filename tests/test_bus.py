"""The bus over the durable log: order, replay, gaps, retention, slow consumers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from eventlog.message import Message
from eventlog.sqllog import EventLog
from hub.live.bus import Bus
from hub.live.frames import ws_text_frame
from hub.live.subscription import Notice, SlowConsumer


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    return EventLog(f"sqlite:///{tmp_path / 'events.db'}")


@pytest.fixture
def other(tmp_path: Path) -> EventLog:
    """The same log opened by another process (a CLI ingest, a feed publisher)."""
    return EventLog(f"sqlite:///{tmp_path / 'events.db'}")


def wait_handed_round(bus: Bus, msg: Message) -> None:
    """Block (in a worker thread) until the bus has read ``msg`` and offered it to all."""
    deadline = time.monotonic() + 5
    while (bus._seq < msg.seq or bus._buf) and time.monotonic() < deadline:
        time.sleep(0.005)


async def take(sub: object, n: int) -> list[Message | Notice]:
    out = []
    for _ in range(n):
        out.append(await asyncio.wait_for(sub.get(), 5))  # type: ignore[attr-defined]
    return out


def test_offsets_increase_per_channel_and_survive_reopen(log: EventLog, tmp_path: Path) -> None:
    assert [log.append("a", "x", {"i": i}).offset for i in range(3)] == [1, 2, 3]
    assert log.append("b", "x", {}).offset == 1
    again = EventLog(f"sqlite:///{tmp_path / 'events.db'}")
    assert again.epoch == log.epoch
    assert [m.data["i"] for m in again.read("a", after=1)] == [1, 2]
    assert again.append("a", "x", {}).offset == 4


def test_live_replay_and_no_duplicates(log: EventLog) -> None:
    async def main() -> None:
        bus = Bus(log, poll_s=0.02)
        await bus.start()
        for i in range(5):
            bus.publish("dataset:t", "e", {"i": i})
        sub = bus.subscription()
        await sub.add("dataset:t", since=2)  # replay 3..5, then live
        for i in range(5, 8):
            await bus.publish_async("dataset:t", "e", {"i": i})
        got = await take(sub, 6)
        assert [m.offset for m in got if isinstance(m, Message)] == [3, 4, 5, 6, 7, 8]
        await asyncio.sleep(0.1)
        assert not sub._queue  # nothing twice
        live = bus.subscription()
        await live.add("dataset:t")  # live only: starts after the head
        bus.publish("dataset:t", "e", {"i": 8})
        assert [m.offset for m in await take(live, 1)] == [9]  # type: ignore[union-attr]
        await bus.stop()

    asyncio.run(main())


def test_messages_from_another_process_reach_subscribers(log: EventLog, other: EventLog) -> None:

    async def main() -> None:
        bus = Bus(log, poll_s=0.02)
        await bus.start()
        sub = bus.subscription()
        await sub.add("dataset:t")
        await asyncio.to_thread(other.append, "dataset:t", "dataset.updated", {"version": 1})
        (msg,) = await take(sub, 1)
        assert isinstance(msg, Message) and msg.data == {"version": 1}
        await bus.stop()

    asyncio.run(main())


def test_the_change_probe_sees_every_other_connections_commit(
    log: EventLog, other: EventLog
) -> None:
    changed = log.change_probe()
    assert changed is not None
    assert changed() is True  # the first check reads
    assert changed() is False
    other.append("a", "x", {})
    assert changed() is True and changed() is False
    log.append("a", "x", {})  # this log's own engine is another connection too
    assert changed() is True
    assert EventLog("sqlite://").change_probe() is None  # in memory: nothing shared
    log.dispose()


def test_an_idle_bus_polls_without_reading_and_still_misses_nothing(
    log: EventLog, other: EventLog
) -> None:
    """Polls that find nothing new run no tail query; appends by another process in a
    burst, and one after a failed read, all arrive in order."""
    reads = [0]
    tail = log.tail
    fail_next = [False]

    def counting_tail(after_seq: int, limit: int = 1000, block_s: float = 0) -> list[Message]:
        reads[0] += 1
        if fail_next[0]:
            fail_next[0] = False
            raise OSError("disk hiccup")
        return tail(after_seq, limit, block_s)

    log.tail = counting_tail  # type: ignore[method-assign]
    make_quick = log.loop_tail

    def counting_loop_tail() -> object:
        quick = make_quick()
        assert quick is not None

        def read(after_seq: int, limit: int) -> list[Message]:
            return counting_tail(after_seq, limit) if fail_next[0] else quick(after_seq, limit)

        return read

    log.loop_tail = counting_loop_tail  # type: ignore[method-assign]
    log.change_watch = lambda: None  # type: ignore[method-assign]  # poll only

    async def main() -> None:
        bus = Bus(log, poll_s=0.005)
        await bus.start()
        sub = bus.subscription()
        await sub.add("feed:f")
        await asyncio.sleep(0.3)  # ~60 polls with nothing new
        assert reads[0] <= 2
        for i in range(50):
            await asyncio.to_thread(other.append, "feed:f", "e", {"i": i})
        got = await take(sub, 50)
        assert [m.data["i"] for m in got if isinstance(m, Message)] == list(range(50))
        fail_next[0] = True  # the read after the next append fails once
        await asyncio.to_thread(other.append, "feed:f", "e", {"i": 50})
        (late,) = await take(sub, 1)
        assert isinstance(late, Message) and late.data == {"i": 50}
        assert fail_next[0] is False  # the failing read did happen
        await bus.stop()

    asyncio.run(main())


def test_history_beyond_retention_is_announced(log: EventLog) -> None:
    for i in range(10):
        log.append("c", "e", {"i": i})
    assert log.trim("c", keep_last=3) == 7

    async def main() -> None:
        bus = Bus(log, poll_s=0.02)
        await bus.start()
        sub = bus.subscription()
        await sub.add("c", since=2)
        got = await take(sub, 4)
        assert isinstance(got[0], Notice) and got[0].type == "history_gap"
        assert got[0].data == {"requested_after": 2, "first_available": 8}
        assert [m.offset for m in got[1:]] == [8, 9, 10]  # type: ignore[union-attr]
        await bus.stop()

    asyncio.run(main())


def test_slow_consumer_is_dropped_not_waited_for(log: EventLog) -> None:
    async def main() -> None:
        bus = Bus(log, poll_s=0.02, queue_size=5)
        await bus.start()
        slow, fast = bus.subscription(), bus.subscription()
        await slow.add("d")
        await fast.add("d")
        for i in range(8):
            await bus.publish_async("d", "e", {"i": i})
            await fast.get()
        with pytest.raises(SlowConsumer):
            for _ in range(8):
                await asyncio.wait_for(slow.get(), 1)
        await bus.stop()

    asyncio.run(main())


def test_a_backlog_reaches_a_direct_sink_in_one_write_in_order(log: EventLog) -> None:
    """Messages read from the log together go to a subscriber's socket in one write (one
    call of its sink), in log order, its filter applied, other channels' messages apart."""

    async def main() -> None:
        bus = Bus(log, poll_s=10)  # the tailer wakes only when nudged
        await bus.start()
        sub = bus.subscription()
        writes: list[list[object]] = []
        sub.sink = lambda items: writes.append([m.data["i"] for m in items]) is None  # type: ignore[union-attr]
        await sub.add("feed:a", accept=lambda m: m.data["i"] != 3)
        for i in range(6):
            log.append("feed:a" if i != 4 else "feed:b", "e", {"i": i})
        bus.nudge()
        for _ in range(100):
            if writes:
                break
            await asyncio.sleep(0.01)
        assert writes == [[0, 1, 2, 5]]
        assert sub.last["feed:a"] == 5  # the filtered message's offset still counts
        await bus.stop()

    asyncio.run(main())


def test_the_loop_tail_reads_what_tail_reads(log: EventLog) -> None:
    for i in range(5):
        log.append("feed:a" if i % 2 else "feed:b", "e", {"i": i, "名": "值"}, {"agency": "x"})
    quick = log.loop_tail()
    assert quick is not None
    assert quick(2, 2) == log.tail(2, 2)
    assert [m.wire_bytes for m in quick(0, 64)] == [m.wire_bytes for m in log.tail(0, 64)]
    assert quick(5, 64) == []
    assert EventLog("sqlite://").loop_tail() is None


def test_a_write_by_another_process_wakes_the_bus_without_polling(
    log: EventLog, other: EventLog
) -> None:
    """The folder watch (Linux inotify) wakes the tailer when another connection appends;
    the poll (here every 60 s) is never needed."""
    probe = log.change_watch()
    if probe is None:
        pytest.skip("no inotify on this system")
    probe.close()

    async def main() -> None:
        bus = Bus(log, poll_s=60)
        await bus.start()
        sub = bus.subscription()
        await sub.add("feed:f")
        await asyncio.sleep(0.05)
        for i in range(3):
            await asyncio.to_thread(other.append, "feed:f", "e", {"i": i})
            (got,) = await take(sub, 1)  # 5 s at most, far below the poll
            assert isinstance(got, Message) and got.data == {"i": i}
        await bus.stop()

    asyncio.run(main())


def test_a_round_hands_new_messages_to_the_rest_of_the_round_in_one_write(
    log: EventLog, other: EventLog
) -> None:
    """A message read while a round of the fan-out is going on reaches the subscribers
    not yet served together with the one before it (one write of both pre-built frames),
    and the ones already served on the next round; nobody gets anything twice or out of
    order.  A subscriber with a filter, or one that must see a masked payload, is served
    through its own sink instead, and the buffer is empty once everyone is served."""
    probe = log.change_watch()
    if probe is None:
        pytest.skip("no inotify on this system: the append would wait for a poll")
    probe.close()
    second: list[Message] = []

    def slow_write() -> bool:
        if not second:  # the round's first write: another process appends meanwhile
            second.append(other.append("feed:a", "e", {"i": 1}))
        time.sleep(0.002)  # a round of 40 takes ~80 ms: the append is read during it
        return True

    async def main() -> None:
        bus = Bus(log, poll_s=60)
        bus.ROUND_SLICE = 5
        await bus.start()
        raw: list[list[bytes]] = []
        sunk: list[list[int]] = []
        subs = []
        for n in range(40):
            sub = bus.subscription()
            raw.append([])
            sunk.append([])
            sub.write_frames(
                lambda frames, n=n: (raw[n].append(frames), slow_write()),
                lambda: False,
                verbatim=(lambda msgs: False) if n == 1 else (lambda msgs: True),
                verbatim_key=n == 1,
            )
            sub.sink = lambda items, n=n: sunk[n].extend(m.data["i"] for m in items) is None  # type: ignore[union-attr]
            await sub.add("feed:a", accept=(lambda m: True) if n == 2 else None)
            subs.append(sub)
        first = log.append("feed:a", "e", {"i": 0})
        bus.nudge()
        for _ in range(300):
            if not bus._buf and all(sub.last["feed:a"] == 2 for sub in subs):
                break
            await asyncio.sleep(0.01)
        both = first.framed(ws_text_frame) + second[0].framed(ws_text_frame)
        assert sunk[1] == [0, 1] and sunk[2] == [0, 1]  # masked / filtered: their sink
        assert raw[1] == raw[2] == []
        framed = [raw[n] for n in range(40) if n not in (1, 2)]
        assert all(b"".join(w) == both for w in framed)  # everyone both, once, in order
        assert [
            first.framed(ws_text_frame),
            second[0].framed(ws_text_frame),
        ] in framed  # served before the append
        assert [both] in framed  # served after it: both in one write
        assert bus._buf == []
        await bus.stop()

    asyncio.run(main())


def test_a_subscriber_whose_writer_fails_costs_the_others_nothing(log: EventLog) -> None:
    async def main() -> None:
        bus = Bus(log, poll_s=0.01)
        await bus.start()
        broken, fine = bus.subscription(), bus.subscription()

        def fail(frames: bytes) -> bool:
            raise OSError("socket gone")

        broken.write_frames(fail, lambda: False)
        await broken.add("feed:a")
        await fine.add("feed:a")
        for i in range(3):
            await bus.publish_async("feed:a", "e", {"i": i})
            (got,) = await take(fine, 1)
            assert isinstance(got, Message) and got.data == {"i": i}
        await bus.stop()

    asyncio.run(main())


def test_a_message_appended_while_subscribing_is_not_missed(log: EventLog, other: EventLog) -> None:
    """The race of a subscribe: the channel's head is read, another process appends, and
    the bus reads that message and hands it round before the new subscription is
    registered.  The subscription still gets it (and only once).

    The race needs the head read in a worker thread, as for a Redis log: a local SQLite
    log's head is read in the event loop, where nothing runs between the read and the
    registration."""

    async def main() -> None:
        bus = Bus(log, poll_s=0.005)
        await bus.start()
        bus._loop_head = None  # read the head in a worker thread (the Redis way)
        early = bus.subscription()
        await early.add("orders:u7")
        read_head = log.head
        raced: list[Message] = []

        def head_then_append(channel: str) -> int:
            head = read_head(channel)
            if not raced:
                raced.append(other.append(channel, "order.opened", {"n": 1}))
                wait_handed_round(bus, raced[0])  # read and handed round meanwhile
            return head

        log.head = head_then_append  # type: ignore[method-assign]
        late = bus.subscription()
        await late.add("orders:u7")
        (got,) = await take(late, 1)
        assert isinstance(got, Message) and got.data == {"n": 1}
        (seen,) = await take(early, 1)
        assert isinstance(seen, Message) and seen.offset == got.offset
        await bus.publish_async("orders:u7", "order.opened", {"n": 2})
        (nxt,) = await take(late, 1)  # the next one, not the first again
        assert isinstance(nxt, Message) and nxt.data == {"n": 2}
        await bus.stop()

    asyncio.run(main())


def test_a_live_message_offered_while_a_replay_ends_is_not_missed(
    log: EventLog, other: EventLog
) -> None:
    """A replay (fill) reads the log, then the head to see if it is done; a message
    appended just after that head read reaches the bus while the fill is still on, and
    is let go by (the fill delivers in order).  The fill must read once more, not end."""
    for i in range(3):
        log.append("feed:r", "e", {"i": i})

    async def main() -> None:
        bus = Bus(log, poll_s=0.005)
        await bus.start()
        read_head = log.head
        raced: list[Message] = []

        def head_then_append(channel: str) -> int:
            head = read_head(channel)
            if head == 3 and not raced and sub.last.get(channel) == 3:  # the fill's last look
                raced.append(other.append(channel, "e", {"i": 3}))
                wait_handed_round(bus, raced[0])  # offered live (and let go by) meanwhile
            return head

        log.head = head_then_append  # type: ignore[method-assign]
        sub = bus.subscription()
        await sub.add("feed:r", since=0)
        got = await take(sub, 4)
        assert [m.data["i"] for m in got if isinstance(m, Message)] == [0, 1, 2, 3]
        assert raced
        await bus.stop()

    asyncio.run(main())
