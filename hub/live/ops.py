"""The live-operations tasks of a serving hub, started and stopped by the app's lifespan.

Presence heartbeats, the alert engine, the outbox drainer (publishes the events that
commits left in the catalog's outbox while the event log was down, or that a process
left behind), and one periodic tick that escalates overdue orders, puts expired grants
on record, checks staleness, saves the alert engine's cursors, settles runs whose process
is gone, applies event retention (per channel count and age, per channel prefix) and
forgets old published outbox rows.

With several replicas every one runs these (each is safe to repeat), except the alert
engine: it runs on the replica holding the lease ``ops:alerts`` (:mod:`hub.live.leases`), so
that a matching event bumps its alert once, not once per replica; another replica takes
it over, from the cursors saved on each tick, when the holder dies.
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
from hub.live.leases import Leadership, Leases, holder_name, open_leases
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
        self.rules = load_rules(s.alert_rules) if s.alert_rules else []
        self.alerts = AlertEngine(hub, self.rules) if self.rules else None
        self.alerts_running = False  # this replica holds ops:alerts and runs the engine
        self._leases: Leases | None = None
        self._alerts_lead: Leadership | None = None
        self._task: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._alerts_holder: asyncio.Task[None] | None = None

    #: How often the drainer looks at the outbox when all is well.
    DRAIN_S = 1.0

    async def start(self) -> None:
        await self.presence.start()
        if self.alerts is not None:
            s = self.hub.settings
            self._leases = open_leases(self.hub.log, s.home, holder_name(s.replica), s.feed_lease_s)
            self._alerts_lead = Leadership(self._leases, "ops:alerts")
            await self._hold_alerts()
            self._alerts_holder = asyncio.create_task(
                self._keep_alerts(), name="blockhub-alerts-lease"
            )
        self._task = asyncio.create_task(self._tick(), name="blockhub-ops-tick")
        self._drainer = asyncio.create_task(self._drain(), name="blockhub-outbox")

    async def stop(self) -> None:
        for task in (self._task, self._drainer, self._alerts_holder):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.alerts is not None and self.alerts_running:
            await self.alerts.stop()
            self.alerts_running = False
        if self._alerts_lead is not None:
            await asyncio.to_thread(self._alerts_lead.release)
        if self._leases is not None:
            self._leases.close()
        await self.presence.stop()

    async def _hold_alerts(self) -> None:
        """Take or renew ``ops:alerts``; start the engine when it is taken, stop it when
        it is lost (a new engine resumes from the cursors saved in the catalog)."""
        assert self._alerts_lead is not None
        held = await asyncio.to_thread(self._alerts_lead.attempt)
        if held and not self.alerts_running:
            if self.alerts is None or self.alerts._task is not None:
                self.alerts = AlertEngine(self.hub, self.rules)  # a fresh one after a loss
            await self.alerts.start()
            self.alerts_running = True
            log.info("alert engine running here, replica %s", self.hub.settings.replica)
        elif not held and self.alerts_running:
            assert self.alerts is not None
            self.alerts_running = False
            await self.alerts.stop()
            log.warning("alert engine: replica %s stepped down", self.hub.settings.replica)

    async def _keep_alerts(self) -> None:
        while True:
            await asyncio.sleep(self.hub.settings.feed_lease_s / 3)
            try:
                await self._hold_alerts()
            except Exception:
                log.exception("alert engine lease pass failed")

    def tick(self) -> None:
        """One pass (runs in a worker thread); each part fails alone."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("escalation", lambda: escalate_overdue(self.hub)),
            ("grant expiry", lambda: self.hub.grants.expire_due()),
            ("retention", lambda: apply_retention(self.hub)),
            ("runs", lambda: settle_runs(self.hub)),
            ("outbox", lambda: self.hub.store.outbox.purge()),
        ]
        if self.alerts is not None and self.alerts_running:
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
