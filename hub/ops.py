"""The live-operations tasks of a serving hub, started and stopped by the app's lifespan.

Presence heartbeats, the alert engine, and one periodic tick that escalates
overdue orders, checks staleness, saves the alert engine's cursors and applies
event retention (per channel count and age, per channel prefix).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hub.alert_rules import load_rules
from hub.alerts import AlertEngine
from hub.context import Hub
from hub.dispatch import escalate_overdue
from hub.presence import Presence

log = logging.getLogger(__name__)


def retention_for(hub: Hub, channel: str) -> tuple[int | None, float | None]:
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


def apply_retention(hub: Hub, now: datetime | None = None) -> int:
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


class OpsRuntime:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        s = hub.settings
        self.presence = Presence(
            hub.bus, max_per_principal=s.ws_max_per_principal, heartbeat_s=s.ws_heartbeat_s
        )
        rules = load_rules(s.alert_rules) if s.alert_rules else []
        self.alerts = AlertEngine(hub, rules) if rules else None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.presence.start()
        if self.alerts is not None:
            await self.alerts.start()
        self._task = asyncio.create_task(self._tick(), name="blockhub-ops-tick")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.alerts is not None:
            await self.alerts.stop()
        await self.presence.stop()

    def tick(self) -> None:
        """One pass (runs in a worker thread); each part fails alone."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("escalation", lambda: escalate_overdue(self.hub)),
            ("retention", lambda: apply_retention(self.hub)),
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
