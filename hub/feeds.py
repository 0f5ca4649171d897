"""The feed runner: MQTT subscribers, the push intake and micro-batch flushers, in the hub.

``blockhub serve`` (the app's lifespan) starts one :class:`FeedRunner`.  For every
registered feed (docs/feeds.md) it keeps a flusher task and, for an ``mqtt`` feed,
a subscriber.  Accepted events are appended to the durable event log on
``feed:<id>`` in one transaction per batch *before* they are acknowledged (the
HTTP answer, the MQTT PUBACK); subscribers of the channel get them at once through
the bus, and the flusher commits them to the lake every ``flush_rows`` events or
``flush_seconds`` seconds, whichever comes first, resuming after a restart from the
offset recorded in the table's last snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from catalog.errors import HubError
from catalog.eventlog import append_many
from catalog.manifest import Manifest, resolve_secrets
from connectors.mqtt import MqttSubscriber
from hub.context import Hub
from pipelines.feeds import (
    EVENT_TYPE,
    Checked,
    FeedOptions,
    check_events,
    committed_offset,
    feed_channel,
    feed_options,
    flush_feed,
    is_feed,
)
from pipelines.ingest import reconcile

log = logging.getLogger(__name__)


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

    @property
    def id(self) -> str:
        return self.manifest.id


class FeedRunner:
    """Runs every registered feed of one hub; rescans the catalog for new ones."""

    def __init__(
        self, hub: Hub, *, env: Mapping[str, str] | None = None, rescan_s: float = 5.0
    ) -> None:
        self.hub = hub
        self.env = dict(os.environ) if env is None else dict(env)
        self.rescan_s = rescan_s
        self.feeds: dict[str, Feed] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scanner: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.scan()
        self._scanner = asyncio.create_task(self._rescan(), name="blockhub-feed-scan")

    async def stop(self, *, flush: bool = True) -> None:
        """Stop intake, then (``flush``) commit whatever is still pending."""
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
            for feed in self.feeds.values():
                try:
                    await self._flush(feed)
                except Exception:  # the events stay in the log; the next start flushes them
                    log.exception("feed %s: final flush failed", feed.id)
        self.feeds.clear()

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
        """The running feed of a manifest, started if needed."""
        async with self._lock:
            feed = self.feeds.get(manifest.id)
            if feed is not None and feed.manifest == manifest:
                return feed
            if feed is not None:  # the manifest changed: restart with the new one
                await self._retire(feed)
            options = feed_options(manifest)
            feed = Feed(manifest, options)
            await asyncio.to_thread(self._prepare, feed)
            feed.task = asyncio.create_task(self._flusher(feed), name=f"blockhub-feed-{feed.id}")
            self.feeds[feed.id] = feed
            log.info("feed %s running (%s)", feed.id, manifest.source.connector)
            return feed

    async def _retire(self, feed: Feed) -> None:
        if feed.subscriber is not None:
            await asyncio.to_thread(feed.subscriber.stop)
        if feed.task is not None:
            feed.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feed.task
        del self.feeds[feed.id]

    def _prepare(self, feed: Feed) -> None:
        hub = self.hub
        reconcile(feed.manifest, lake=hub.lake, store=hub.store, publisher=hub.bus.publish)
        feed.committed = committed_offset(feed.manifest, hub.lake, hub.log.epoch)
        if feed.manifest.source.connector != "mqtt":
            return
        opts = feed.options
        # Topics may name a deployment prefix from the environment, like secrets do.
        resolved = resolve_secrets(
            {"username": opts.username, "password": opts.password, "topics": opts.topics},
            self.env,
        )
        sub = MqttSubscriber(
            host=opts.host,
            port=opts.port,
            topics=resolved["topics"],
            qos=opts.qos,
            client_id=opts.client_id or self._client_id(feed.id),
            on_batch=lambda messages: self._on_mqtt(feed, messages),
            username=resolved["username"],
            password=resolved["password"],
        )
        sub.start()
        feed.subscriber = sub

    def _client_id(self, feed_id: str) -> str:
        # Stable per installation and feed, so the broker keeps the session across restarts.
        home = hashlib.sha1(str(self.hub.settings.home).encode()).hexdigest()[:10]
        return f"blockhub-{home}-{feed_id}"[:64]

    # -- intake --------------------------------------------------------------------

    def append(self, feed: Feed, checked: Checked) -> tuple[int, int]:
        """Make valid events durable and live: one log transaction, then wake the bus."""
        m = feed.manifest
        first, last = append_many(
            self.hub.log,
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
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feed.wake.wait(), poll)
            feed.wake.clear()
            head = await asyncio.to_thread(self.hub.log.head, feed_channel(feed.id))
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
        hub = self.hub
        version = await asyncio.to_thread(
            flush_feed,
            feed.manifest,
            lake=hub.lake,
            store=hub.store,
            read=hub.log.read,
            epoch=hub.log.epoch,
            publisher=hub.bus.publish,
            max_events=max(feed.options.flush_rows, 1000) * 10,
        )
        feed.committed = await asyncio.to_thread(
            committed_offset, feed.manifest, hub.lake, hub.log.epoch
        )
        if version is not None:
            log.info(
                "feed %s: flushed %d event(s) as version %d",
                feed.id,
                version.rows_added,
                version.version,
            )

    def status(self, feed_id: str) -> dict[str, Any]:
        feed = self.feeds.get(feed_id)
        if feed is None:
            return {"running": False}
        return {
            "running": True,
            "connector": feed.manifest.source.connector,
            "accepted": feed.accepted,
            "rejected": feed.rejected,
            "committed_offset": feed.committed,
            "mqtt_connected": feed.subscriber.connected.is_set() if feed.subscriber else None,
        }
