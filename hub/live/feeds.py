"""The feed runner: MQTT subscribers, the push intake and micro-batch flushers, in the hub.

``blockhub serve`` (the app's lifespan) starts one :class:`FeedRunner`.  For every
registered feed (docs/feeds.md) it keeps a flusher task and, for an ``mqtt`` feed,
a subscriber.  Accepted events are appended to the durable event log on
``feed:<id>`` in one transaction per batch *before* they are acknowledged (the
HTTP answer, the MQTT PUBACK); subscribers of the channel get them at once through
the bus, and the flusher commits them to the lake every ``flush_rows`` events or
``flush_seconds`` seconds, whichever comes first, resuming after a restart from the
offset recorded in the table's last snapshot.

With several replicas (``serve`` processes sharing the catalog, lake and event log) a
feed is consumed once: the replica holding the feed's lease (:mod:`hub.live.leases`) runs its
MQTT subscriber and its flusher; the others watch the lease and take over when its holder
dies or gives it up.  HTTP pushes are accepted by any replica (docs/feeds.md, D50).

A flush (reading the events back, encoding Parquet, the Iceberg commit: a quarter of a
second of Python for a few thousand events) runs in a process of its own, one for all
feeds (:class:`FlushWorker`), so that it never holds the serving process's interpreter
lock while the websocket fan-out is writing (docs/decisions.md D34); with storage that
only this process can reach (an in-memory database) it runs in a worker thread instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from catalog.datasets.manifest import Manifest
from catalog.datasets.store import Version
from catalog.domain.channels import feed_channel
from catalog.errors import HubError, SourceRefused
from catalog.runtime import settle_heap
from connectors.mqtt import MqttSubscriber
from hub.live.host import LiveHub
from hub.live.leases import Leadership, Leases, holder_name, open_leases, replica_of
from hub.settings import Settings
from pipelines.feeds import (
    EVENT_TYPE,
    Checked,
    FeedOptions,
    check_events,
    committed_offset,
    ensure_feed_table,
    feed_options,
    flush_feed,
    is_feed,
)
from pipelines.ingest import reconcile

log = logging.getLogger(__name__)
_R = TypeVar("_R")


# -- the flush worker ----------------------------------------------------------------

_worker_hub: LiveHub | None = None
_worker_busy = threading.Lock()  # held by a flush: the watch lets it finish before leaving


def _outlive_no_parent(parent: int, period_s: float = 1.0) -> None:
    """In the worker process: leave once the serving process is gone (killed, crashed).

    A process pool's worker holds both ends of its own call queue, so it would wait for
    work forever after its parent died; this watch ends it instead, after the flush in
    progress if any (a flush is safe to lose midway, but there is no need to)."""
    while os.getppid() == parent:
        time.sleep(period_s)
    with _worker_busy:
        os._exit(0)


def _worker_start(opener: Callable[[Settings], LiveHub], settings: Settings, parent: int) -> None:
    """In the worker process: open the hub's storage once, for every flush to come, with
    the serving hub's own ``open`` (the worker builds the same objects; the live wing does
    not import the assembly that knows how)."""
    global _worker_hub
    threading.Thread(target=_outlive_no_parent, args=(parent,), daemon=True).start()
    # The serving process decides when to stop (a Ctrl-C or a service manager's SIGTERM
    # reaches the whole process group): it finishes its flushes, then shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Lake writes can wait; live delivery cannot: when both want the CPU, the fan-out gets it.
    with contextlib.suppress(OSError):
        os.nice(19)
    settle_heap()
    _worker_hub = opener(settings)


def _in_worker_hub(here: Callable[..., _R], *args: Any) -> _R:
    """In the worker process: ``here(hub, *args)`` on the storage it opened at start."""
    hub = _worker_hub
    if hub is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("flush worker not started")
    with _worker_busy:
        return here(hub, *args)


def _warm_here(hub: LiveHub, manifest: Manifest) -> None:
    ensure_feed_table(manifest, hub.lake)


def _flush_here(
    hub: LiveHub, manifest: Manifest, max_events: int, epoch: str
) -> tuple[Version | None, int]:
    # ``epoch`` is the serving process's: the one its bus delivers, which this process's own
    # log client may not have learnt yet (a Redis that started over, D-faults).
    version = flush_feed(
        manifest,
        lake=hub.lake,
        store=hub.store,
        read=hub.log.read,
        epoch=epoch,
        # The update goes to the shared event log; the serving process tails it like any
        # other process's appends (a CLI ingest, an Airflow task).
        publisher=hub.bus.publish,
        max_events=max_events,
    )
    return version, committed_offset(manifest, hub.lake, epoch)


def _shareable(settings: Settings) -> bool:
    """Whether another process reaches the same catalog, lake and event log."""
    urls = (settings.catalog_db, settings.lake_db, settings.events_db)
    return not any(u.rstrip("/").endswith((":memory:", "sqlite:")) for u in urls)


class FlushWorker:
    """Feed flushes in one process of their own (started with the first feed, spawned, so
    it shares nothing with the serving process but the storage), or in a worker thread of
    this process where that is not possible or not wanted.

    ``feed_flush: process`` asks for the process (the ``blockhub`` command resolves
    ``auto`` to it).  ``auto`` elsewhere means the thread: a spawned process imports the
    program's main module again, and a program that embeds the hub (a script calling
    ``hub.api.server.serving``) may not guard its own start-up with ``__name__``.
    """

    def __init__(self, hub: LiveHub) -> None:
        self.hub = hub
        self.in_process = hub.settings.feed_flush == "process" and _shareable(hub.settings)
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the worker process now (it takes a second or two to import), if used."""
        if self.in_process and self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_start,
                initargs=(type(self.hub).open, self.hub.settings, os.getpid()),
            )
            self._pool.submit(int)  # spawn it and open the storage before the first flush

    async def flush(
        self, manifest: Manifest, max_events: int, epoch: str
    ) -> tuple[Version | None, int]:
        return await self._run(_flush_here, manifest, max_events, epoch)

    async def warm(self, manifest: Manifest) -> None:
        """Create the feed's lake table (if new) and load it where flushes run, so that the
        first flush does not pay for it during live traffic: creating the table and the
        worker's first look at the lake took 0.8–3.7 s of a nice-19 process, and the
        fan-out's slowest deliveries fell in that window (D37)."""
        await self._run(_warm_here, manifest)

    async def _run(self, here: Callable[..., _R], *args: Any) -> _R:
        """``here(hub, *args)`` where flushes run: the worker process or a thread."""
        if not self.in_process:
            return await asyncio.to_thread(here, self.hub, *args)
        try:
            return await self._in_worker(here, *args)
        except BrokenProcessPool:
            # The worker died (killed, out of memory).  A flush is safe to repeat, since the
            # lake records how far the feed got: once more, with a new worker (should that
            # one die too, the next flush starts over the same way).
            log.warning("feed flush worker died; starting a new one")
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            return await self._in_worker(here, *args)

    async def _in_worker(self, here: Callable[..., _R], *args: Any) -> _R:
        self.start()
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _in_worker_hub, here, *args)

    @property
    def pid(self) -> int | None:
        """The worker process's id while it runs (for operators, and tests)."""
        procs = getattr(self._pool, "_processes", None) or {}
        return next(iter(procs), None)

    async def stop(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, True)


@dataclass
class Feed:
    """One running feed: its manifest, options, flusher state and counters."""

    manifest: Manifest
    options: FeedOptions
    committed: int = 0
    accepted: int = 0
    rejected: int = 0
    subscriber: MqttSubscriber | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    lake_ready: bool = False  # the table is made and loaded where flushes run
    epoch: str = ""  # the event log epoch ``committed`` counts in
    lead: Leadership | None = None  # this replica's hold on the feed's lease

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def leading(self) -> bool:
        """This replica consumes the feed (its subscriber and flusher run here)."""
        return self.task is not None


class FeedRunner:
    """Runs every registered feed of one hub; rescans the catalog for new ones."""

    def __init__(self, hub: LiveHub, *, rescan_s: float = 5.0) -> None:
        self.hub = hub
        self._refused: dict[str, str] = {}  # feed → the refusal last put on the audit chain
        self.rescan_s = rescan_s
        self.feeds: dict[str, Feed] = {}
        self.flusher = FlushWorker(hub)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scanner: asyncio.Task[None] | None = None
        self._leader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        s = hub.settings
        self.leases: Leases = open_leases(hub.log, s.home, holder_name(s.replica), s.feed_lease_s)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.scan()
        self._scanner = asyncio.create_task(self._rescan(), name="blockhub-feed-scan")
        self._leader = asyncio.create_task(self._lead(), name="blockhub-feed-leases")

    async def stop(self, *, flush: bool = True) -> None:
        """Stop intake, then (``flush``) commit whatever is still pending, then give the
        leases up so that another replica takes the feeds over at once."""
        if self._leader is not None:
            self._leader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._leader
        led = [f for f in self.feeds.values() if f.leading]
        tasks = [t for t in [self._scanner, *(f.task for f in self.feeds.values())] if t]
        for feed in self.feeds.values():
            if feed.subscriber is not None:
                await asyncio.to_thread(feed.subscriber.stop)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if flush:
            for feed in led:
                try:
                    await self._flush(feed)
                except Exception:  # the events stay in the log; the next start flushes them
                    log.exception("feed %s: final flush failed", feed.id)
        for feed in self.feeds.values():
            if feed.lead is not None:
                await asyncio.to_thread(feed.lead.release)
        self.feeds.clear()
        await self.flusher.stop()
        self.leases.close()

    async def _lead(self) -> None:
        """Renew the leases of the feeds this replica leads, every third of their time to
        live; take over a feed whose lease is free; step down from one that is lost."""
        period = self.hub.settings.feed_lease_s / 3
        while True:
            await asyncio.sleep(period)
            for feed in list(self.feeds.values()):
                try:
                    await self._hold(feed)
                except Exception:
                    log.exception("feed %s: lease pass failed", feed.id)

    async def _hold(self, feed: Feed) -> None:
        async with self._lock:
            if self.feeds.get(feed.id) is not feed or feed.lead is None:
                return  # retired or replaced meanwhile
            held = await asyncio.to_thread(feed.lead.attempt)
            if held and not feed.leading:
                try:
                    await self._take_over(feed)
                except HubError as e:
                    log.error("feed %s not started: %s", feed.id, e.message)
                    await asyncio.to_thread(feed.lead.release)
            elif not held and feed.leading:
                await self._step_down(feed)

    async def _take_over(self, feed: Feed) -> None:
        """Start consuming: the subscriber and the flusher (this replica holds the lease)."""
        await asyncio.to_thread(self._prepare, feed)
        self.flusher.start()
        feed.task = asyncio.create_task(self._flusher(feed), name=f"blockhub-feed-{feed.id}")
        log.info(
            "feed %s running here, replica %s (%s)",
            feed.id,
            self.hub.settings.replica,
            feed.manifest.source.connector,
        )

    async def _step_down(self, feed: Feed) -> None:
        """Stop consuming (the lease is lost): no final flush, the new leader flushes."""
        if feed.subscriber is not None:
            await asyncio.to_thread(feed.subscriber.stop)
            feed.subscriber = None
        if feed.task is not None:
            feed.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feed.task
            feed.task = None
        log.warning("feed %s: replica %s stepped down", feed.id, self.hub.settings.replica)

    async def _rescan(self) -> None:
        while True:
            await asyncio.sleep(self.rescan_s)
            try:
                await self.scan()
            except Exception:
                log.exception("feed scan failed; trying again in %.0f s", self.rescan_s)

    async def scan(self) -> None:
        """Start every registered feed not running yet (a broker that is down is retried)."""
        records = await asyncio.to_thread(self.hub.store.list_datasets)
        for record in records:
            if is_feed(record.manifest) and record.id not in self.feeds:
                try:
                    await self.ensure(record.manifest)
                except HubError as e:
                    log.error("feed %s not started: %s", record.id, e.message)

    async def ensure(self, manifest: Manifest) -> Feed:
        """The feed of a manifest, known to this replica (it takes pushes) and consumed
        here if this replica gets its lease (else the lease pass keeps trying)."""
        async with self._lock:
            feed = self.feeds.get(manifest.id)
            if feed is not None and feed.manifest == manifest:
                return feed
            if feed is not None:  # the manifest changed: restart with the new one
                await self._retire(feed)
            options = feed_options(manifest)
            feed = Feed(manifest, options, lead=Leadership(self.leases, f"feed:{manifest.id}"))
            assert feed.lead is not None
            if await asyncio.to_thread(feed.lead.attempt):
                try:
                    await self._take_over(feed)
                except BaseException:
                    await asyncio.to_thread(feed.lead.release)
                    raise
            else:
                log.info(
                    "feed %s: led by replica %s",
                    feed.id,
                    replica_of(await asyncio.to_thread(feed.lead.holder)),
                )
            self.feeds[feed.id] = feed
            return feed

    async def _retire(self, feed: Feed) -> None:
        if feed.subscriber is not None:
            await asyncio.to_thread(feed.subscriber.stop)
        if feed.task is not None:
            feed.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feed.task
        if feed.lead is not None:
            await asyncio.to_thread(feed.lead.release)
        del self.feeds[feed.id]

    def _prepare(self, feed: Feed) -> None:
        hub = self.hub
        reconcile(feed.manifest, lake=hub.lake, store=hub.store, publisher=hub.bus.publish)
        feed.epoch = hub.bus.epoch
        feed.committed = committed_offset(feed.manifest, hub.lake, feed.epoch)
        if feed.manifest.source.connector != "mqtt":
            return
        # The broker, its credentials and the topic prefix are the agency's profile's;
        # the connection is resolved (and audited) each time the subscriber starts.
        guard = hub.sources
        try:
            resolved = guard.resolve(feed.manifest)
        except SourceRefused as e:
            if self._refused.get(feed.id) != e.message:
                self._refused[feed.id] = e.message
                guard.record(
                    feed.manifest, None, outcome="denied", trigger="feed", reason=e.message
                )
            raise
        self._refused.pop(feed.id, None)
        guard.record(feed.manifest, resolved, trigger="feed")
        opts, conn = feed.options, resolved.options
        sub = MqttSubscriber(
            host=str(conn["host"]),
            port=int(conn["port"]),
            topics=list(conn["topics"]),
            qos=opts.qos,
            client_id=self._client_id(feed.id),
            on_batch=lambda messages: self._on_mqtt(feed, messages),
            username=conn.get("username"),
            password=conn.get("password"),
        )
        sub.start()
        feed.subscriber = sub

    def _client_id(self, feed_id: str) -> str:
        # Stable per installation and feed, so the broker keeps the session across restarts
        # and hands it to the replica that takes the feed over: the session (the broker's
        # queue of unacknowledged messages) is the feed's, held by one replica at a time —
        # the lease holder.  Replicas share the home path (one volume in docker-compose).
        home = hashlib.sha1(str(self.hub.settings.home).encode()).hexdigest()[:10]
        return f"blockhub-{home}-{feed_id}"[:64]

    # -- intake --------------------------------------------------------------------

    def append(self, feed: Feed, checked: Checked) -> tuple[int, int]:
        """Make valid events durable and live: one log transaction, then wake the bus."""
        m = feed.manifest
        first, last = self.hub.log.append_many(
            feed_channel(m.id),
            EVENT_TYPE,
            checked.records,
            {"agency": m.agency, "feed": m.id},
        )
        feed.accepted += len(checked.records)
        self.hub.bus.nudge()
        self._wake(feed)
        return first, last

    def _wake(self, feed: Feed) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(feed.wake.set)

    def _on_mqtt(self, feed: Feed, messages: list[tuple[str, bytes]]) -> None:
        """Messages from the broker (the subscriber's worker thread): keep their valid events
        in one log transaction, log the rest.  Returning lets the messages be acknowledged."""
        events: list[Any] = []
        origin: list[tuple[str, int]] = []  # (topic, index within its message) of each event
        for topic, payload in messages:
            try:
                doc: Any = orjson.loads(payload)
            except orjson.JSONDecodeError as e:
                feed.rejected += 1
                log.warning("feed %s: message on %s is not JSON (%s); dropped", feed.id, topic, e)
                continue
            batch = doc if isinstance(doc, list) else [doc]
            events += batch
            origin += [(topic, i) for i in range(len(batch))]
        if not events:
            return
        checked = check_events(feed.manifest, events)
        for err in checked.errors:
            feed.rejected += 1
            topic, index = origin[err.index]
            log.warning(
                "feed %s: event %d of a message on %s rejected: %s",
                feed.id,
                index,
                topic,
                err.reason,
            )
        if checked.records:
            self.append(feed, checked)

    # -- flushing ------------------------------------------------------------------

    async def _flusher(self, feed: Feed) -> None:
        opts = feed.options
        poll = min(opts.flush_seconds, 0.5)
        pending_since: float | None = None
        try:
            await self.flusher.warm(feed.manifest)
            feed.lake_ready = True
        except Exception as e:  # the first flush makes the table and reports what fails
            log.warning("feed %s: lake table not made ready at start: %s", feed.id, e)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feed.wake.wait(), poll)
            feed.wake.clear()
            bus = self.hub.bus
            if not bus.ready:
                continue
            if feed.epoch != bus.epoch:
                # The log started over: in the new epoch the lake holds nothing yet (the
                # table's cursor names the old one), so everything there is pending.
                feed.epoch, feed.committed, pending_since = bus.epoch, 0, None
            try:
                head = await asyncio.to_thread(self.hub.log.head, feed_channel(feed.id))
            except Exception as e:  # the log is down: the bus says so; look again later
                log.debug("feed %s: head not read (%s)", feed.id, e)
                continue
            pending = head - feed.committed
            if pending <= 0:
                pending_since = None
                continue
            now = time.monotonic()
            if pending_since is None:
                pending_since = now
            if pending < opts.flush_rows and now - pending_since < opts.flush_seconds:
                continue
            try:
                await self._flush(feed)
            except Exception:
                log.exception("feed %s: flush failed; retrying in %.1f s", feed.id, poll)
                await asyncio.sleep(opts.flush_seconds)
                continue
            pending_since = time.monotonic() if head > feed.committed else None

    async def _flush(self, feed: Feed) -> None:
        max_events = max(feed.options.flush_rows, 1000) * 10
        version, feed.committed = await self.flusher.flush(feed.manifest, max_events, feed.epoch)
        feed.lake_ready = True  # a flush makes the table too, should the warm-up have failed
        if version is not None:
            log.info(
                "feed %s: flushed %d event(s) as version %d",
                feed.id,
                version.rows_added,
                version.version,
            )

    def status(self, feed_id: str) -> dict[str, Any]:
        """The feed as this replica sees it (reads the lease's holder: call off the loop)."""
        feed = self.feeds.get(feed_id)
        replica = self.hub.settings.replica
        if feed is None:
            return {"running": False, "replica": replica}
        holder = feed.lead.holder() if feed.lead is not None else None
        return {
            "running": True,
            "replica": replica,
            "leader": feed.leading,
            "leader_replica": replica_of(holder),
            "connector": feed.manifest.source.connector,
            "accepted": feed.accepted,
            "rejected": feed.rejected,
            "committed_offset": feed.committed,
            "mqtt_connected": feed.subscriber.connected.is_set() if feed.subscriber else None,
            "flush_worker_pid": self.flusher.pid,  # None: flushes run in a thread (D34)
            "lake_ready": feed.lake_ready,
        }
