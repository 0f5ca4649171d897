"""The live-operations tasks of a serving hub, started and stopped by the app's lifespan.

Presence heartbeats, the alert engine, the outbox drainer (publishes the events that
commits left in the catalog's outbox while the event log was down, or that a process
left behind), and one periodic tick that escalates overdue orders, puts expired grants
on record, checks staleness, saves the alert engine's cursors, settles runs whose process
is gone, applies event retention (per channel count and age, per channel prefix) and
forgets old published outbox rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hub.live.alert_rules import load_rules
from hub.live.alerts import AlertEngine
from hub.live.dispatch import escalate_overdue
from hub.live.host import LiveHub
from hub.live.outage import Outage, backoff_s
from hub.live.presence import Presence
from pipelines.ingest import reconcile

log = logging.getLogger(__name__)


def retention_for(hub: LiveHub, channel: str) -> tuple[int | None, float | None]:
    """(keep_last, keep_s) of a channel: the longest matching prefix rule, else the defaults."""
    s = hub.settings
    keep_last, keep_s = s.events_keep_last, s.events_keep_s
    best = -1
    for prefix, rule in s.events_retention.items():
        if channel.startswith(prefix) and len(prefix) > best:
            best = len(prefix)
            keep_last = int(rule["keep_last"]) if "keep_last" in rule else keep_last
            keep_s = float(rule["keep_s"]) if "keep_s" in rule else keep_s
    return keep_last, keep_s


def apply_retention(hub: LiveHub, now: datetime | None = None) -> int:
    """Trim every channel to its retention; returns how many messages were dropped."""
    now = now or datetime.now(UTC)
    dropped = 0
    for channel in hub.log.channels():
        keep_last, keep_s = retention_for(hub, channel)
        if keep_last is not None:
            dropped += hub.log.trim(channel, keep_last)
        if keep_s is not None:
            dropped += hub.log.trim_before(channel, now - timedelta(seconds=keep_s))
    return dropped


def settle_runs(hub: LiveHub) -> int:
    """Close the runs whose process is gone (lease expired, process no longer running):
    :func:`pipelines.ingest.reconcile` of each such dataset records a version the lake
    holds and the catalog does not, and marks the run succeeded or interrupted."""
    expired = hub.store.expired_runs()
    for dataset_id in sorted({r.dataset_id for r in expired}):
        manifest = hub.store.get_dataset(dataset_id).manifest
        reconcile(manifest, lake=hub.lake, store=hub.store, publisher=hub.bus.publish)
    return len(expired)


class OpsRuntime:
    def __init__(self, hub: LiveHub) -> None:
        self.hub = hub
        s = hub.settings
        self.presence = Presence(
            hub.bus, max_per_principal=s.ws_max_per_principal, heartbeat_s=s.ws_heartbeat_s
        )
        rules = load_rules(s.alert_rules) if s.alert_rules else []
        self.alerts = AlertEngine(hub, rules) if rules else None
        self._task: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None

    #: How often the drainer looks at the outbox when all is well.
    DRAIN_S = 1.0

    async def start(self) -> None:
        await self.presence.start()
        if self.alerts is not None:
            await self.alerts.start()
        self._task = asyncio.create_task(self._tick(), name="blockhub-ops-tick")
        self._drainer = asyncio.create_task(self._drain(), name="blockhub-outbox")

    async def stop(self) -> None:
        for task in (self._task, self._drainer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.alerts is not None:
            await self.alerts.stop()
        await self.presence.stop()

    def tick(self) -> None:
        """One pass (runs in a worker thread); each part fails alone."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("escalation", lambda: escalate_overdue(self.hub)),
            ("grant expiry", lambda: self.hub.grants.expire_due()),
            ("retention", lambda: apply_retention(self.hub)),
            ("runs", lambda: settle_runs(self.hub)),
            ("outbox", lambda: self.hub.store.outbox.purge()),
        ]
        if self.alerts is not None:
            steps += [("staleness", self.alerts.check_staleness)]
            steps += [("alert cursors", self.alerts.save_cursors)]
        for name, step in steps:
            try:
                step()
            except Exception:
                log.exception("ops tick: %s failed", name)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.hub.settings.ops_tick_s)
            await asyncio.to_thread(self.tick)

    async def _drain(self) -> None:
        """Publish the outbox's pending events, oldest first; while the event log (or the
        catalog) is down, retry with backoff and jitter, at most 30 s apart."""
        outbox, publish = self.hub.store.outbox, self.hub.bus.publish
        outage = Outage("event log or catalog, for the outbox drain,")
        while True:
            try:
                drained = await asyncio.to_thread(outbox.drain, publish, force=True)
                if drained.error is not None:
                    raise RuntimeError(drained.error)
                if drained.published:
                    log.info("outbox: %d event(s) published", drained.published)
                outage.ok()
                await asyncio.sleep(self.DRAIN_S)
            except Exception as e:
                outage.failed(e)
                await asyncio.sleep(backoff_s(outage.failures, self.DRAIN_S, 30.0))
