"""The alert engine: evaluates the rules on the bus's messages and publishes on ``alerts``.

It reads each rule channel through an ordinary bus subscription, from the offset
it had evaluated before a restart (kept in ``ops_rule_cursors``), so no event is
skipped while the hub was down.  Windows and thresholds use the message's own
timestamp; staleness is checked on each tick against the channel's latest message.
Opening, acknowledging and resolving are stored (``ops_alerts``) and published.

Rules run for no single reader, so they see an event as
:func:`catalog.access.effective.platform_view` shows it — every declared field, personal data
masked — and what an alert stores (title, key, event) carries nothing more.  Each
receiver then gets the alert through :func:`catalog.access.disclosure.disclose_alert` with its
own access to the source dataset; ``detail.fields`` records which fields the title and
key were made of, so a receiver who may not see one of them gets neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import string
import time
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from typing import Any

from catalog.access.disclosure import disclose_record, source_dataset
from catalog.access.effective import Access, platform_view
from catalog.domain.channels import ALERTS
from catalog.errors import AccessDenied, NotFound
from catalog.identity.store import Principal
from catalog.ops.store import Alert, AlertEvents
from catalog.outbox import Event
from eventlog.message import Message
from hub.live.alert_rules import Rule
from hub.live.channels import is_ops
from hub.live.host import LiveHub
from hub.live.outage import backoff_s
from hub.live.subscription import Notice

log = logging.getLogger(__name__)

VIEW_TTL_S = 5.0
"""How long the engine reuses a source dataset's platform view (a changed manifest's
personal-data tags apply within this time)."""


def title_fields(title: str | None) -> set[str]:
    """The event fields a rule's title template refers to (``{aqi}`` → ``aqi``)."""
    if not title:
        return set()
    try:
        parsed = list(string.Formatter().parse(title))
    except ValueError:
        return set()
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in parsed if name}


def alert_event(event: str, source: dict[str, Any]) -> AlertEvents:
    """The ``alerts`` event announcing an alert's change, made in the transaction that
    changes it (staged in the catalog's outbox, published after the commit)."""

    def events(alert: Alert) -> list[Event]:
        return [Event(ALERTS, event, alert.to_dict(), {"rule": alert.rule_id, **source})]

    return events


def acknowledge(hub: LiveHub, principal: Principal, alert_id: str, note: str | None) -> Alert:
    if not is_ops(principal):
        raise AccessDenied("only operators and admins handle alerts", role=principal.role)
    announced = alert_event("alert.acknowledged", {"actor": principal.id})
    alert = hub.ops.acknowledge_alert(alert_id, principal.id, note, events=announced)
    hub.announce()
    return alert


def resolve(hub: LiveHub, principal: Principal, alert_id: str, note: str | None) -> Alert:
    if not is_ops(principal):
        raise AccessDenied("only operators and admins handle alerts", role=principal.role)
    alert = hub.ops.resolve_alert(
        alert_id, principal.id, note, events=alert_event("alert.resolved", {"actor": principal.id})
    )
    hub.announce()
    return alert


def _fields(rule: Rule) -> list[str]:
    return sorted(set(rule.key) | title_fields(rule.title))


class AlertEngine:
    def __init__(self, hub: LiveHub, rules: list[Rule]) -> None:
        self.hub = hub
        self.rules = rules
        self.by_channel: dict[str, list[Rule]] = defaultdict(list)
        for r in rules:
            self.by_channel[r.channel].append(r)
        self._windows: dict[tuple[str, str], deque[datetime]] = defaultdict(deque)
        self._last_seen: dict[str, datetime] = {}
        self._evaluated: dict[str, int] = {}  # channel -> offset evaluated
        # channel -> (epoch, offset) to save, set in one assignment: an offset means
        # something only in its epoch (after the log started over, the new one's)
        self._cursors: dict[str, tuple[str, int]] = {}
        self._saved: dict[str, tuple[str, int]] = {}
        self._sub = hub.bus.subscription()
        self._task: asyncio.Task[None] | None = None
        self._views: dict[str, tuple[float, Access | None]] = {}

    def _view(self, channel: str) -> Access | None:
        """The platform view of the channel's dataset (None: no such dataset)."""
        now = time.monotonic()
        hit = self._views.get(channel)
        if hit is not None and now - hit[0] < VIEW_TTL_S:
            return hit[1]
        name = source_dataset(channel)
        view = None
        if name is not None:
            with contextlib.suppress(NotFound):
                view = platform_view(self.hub.store.get_dataset(name))
        self._views[channel] = (now, view)
        return view

    async def start(self) -> None:
        self._started = datetime.now(UTC)
        try:
            await self._subscribe_once()
        except Exception as e:  # the event log or the catalog is down: _run retries
            log.warning("alert engine: rule channels not subscribed yet (%s); retrying", e)
        self._task = asyncio.create_task(self._run(), name="blockhub-alerts")

    async def _subscribe_once(self) -> None:
        """Read each rule channel from where it was evaluated before (in the epoch the
        cursor was saved in)."""
        for channel in self.by_channel:
            if channel in self._sub.last:
                continue
            epoch = self.hub.bus.epoch
            since = await asyncio.to_thread(self.hub.ops.rule_cursor, channel, epoch)
            head = await self._sub.add(channel, since)
            if head:  # staleness counts from the channel's latest message, if any
                last = await asyncio.to_thread(self.hub.log.read, channel, head - 1, 1)
                if last:
                    self._last_seen[channel] = last[0].ts

    async def _subscribe(self) -> None:
        """:meth:`_subscribe_once` until it succeeds, with backoff."""
        failures = 0
        while len(self._sub.last) < len(self.by_channel):
            try:
                await self._subscribe_once()
            except Exception as e:
                failures += 1
                log.warning("alert engine: rule channels not subscribed yet (%s); retrying", e)
                await asyncio.sleep(backoff_s(failures, 0.5, 30.0))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._sub.close()
        await asyncio.to_thread(self.save_cursors)

    async def _run(self) -> None:
        await self._subscribe()
        while True:
            item = await self._sub.get()
            if isinstance(item, Notice):
                continue
            try:
                await asyncio.to_thread(self.evaluate, item)
            except Exception:
                log.exception("alert evaluation failed for %s@%s", item.channel, item.offset)

    def evaluate(self, msg: Message) -> None:
        """Apply every rule of the message's channel (runs in a worker thread)."""
        self._last_seen[msg.channel] = max(msg.ts, self._last_seen.get(msg.channel, msg.ts))
        self._evaluated[msg.channel] = msg.offset
        self._cursors[msg.channel] = (msg.epoch, msg.offset)
        source = {"channel": msg.channel, "offset": msg.offset, **msg.source}
        data = msg.data
        if msg.channel.startswith("feed:"):  # rows: as the platform view shows them
            view = self._view(msg.channel)
            data = (disclose_record(view, msg.data) if view is not None else None) or {}
        for rule in self.by_channel.get(msg.channel, ()):
            if rule.kind == "staleness":
                self._fresh_again(rule, source)
                continue
            if not rule.selects(data):
                continue
            key = rule.key_of(data)
            if rule.kind == "threshold":
                if rule.crosses(data):
                    detail: dict[str, Any] = {"event": data, "fields": _fields(rule)}
                    self._raise(rule, key, rule.render_title(data), detail, source, msg.ts)
            elif rule.kind == "window":
                assert rule.window_s is not None and rule.more_than is not None
                win = self._windows[(rule.id, key)]
                win.append(msg.ts)
                horizon = msg.ts - timedelta(seconds=rule.window_s)
                while win and win[0] < horizon:
                    win.popleft()
                if len(win) > rule.more_than:
                    keyed = {k: data.get(k) for k in rule.key}
                    detail = {
                        "count": len(win),
                        "window_s": rule.window_s,
                        "key": keyed,
                        "fields": _fields(rule),
                    }
                    self._raise(rule, key, rule.render_title(data), detail, source, msg.ts)

    def _raise(
        self,
        rule: Rule,
        key: str,
        title: str,
        detail: dict[str, Any],
        source: dict[str, Any],
        at: datetime,
    ) -> None:
        # Repeats only bump the stored count: one message per alert, not per event.
        _alert, new = self.hub.ops.raise_alert(
            rule.id,
            key,
            severity=rule.severity,
            title=title,
            source=rule.channel,
            detail=detail,
            events=alert_event("alert.opened", {"rule": rule.id, **source}),
        )
        if new:
            self.hub.announce()

    def _fresh_again(self, rule: Rule, source: dict[str, Any]) -> None:
        alert = self.hub.ops.open_alert_for(rule.id, rule.channel)
        if alert is not None:
            self.hub.ops.resolve_alert(
                alert.id,
                "system",
                "data arrived again",
                events=alert_event("alert.resolved", {"rule": rule.id, **source}),
            )
            self.hub.announce()

    def check_staleness(self, now: datetime | None = None) -> None:
        """Open a staleness alert for each rule channel quiet for longer than allowed."""
        now = now or datetime.now(UTC)
        for rule in self.rules:
            if rule.kind != "staleness":
                continue
            assert rule.max_age_s is not None
            last = self._last_seen.get(rule.channel, self._started)
            age = (now - last).total_seconds()
            if age > rule.max_age_s and self.hub.ops.open_alert_for(rule.id, rule.channel) is None:
                detail: dict[str, Any] = {
                    "last_message_at": last.isoformat()
                    if rule.channel in self._last_seen
                    else None,
                    "age_s": round(age, 1),
                    "max_age_s": rule.max_age_s,
                    "fields": [],
                }
                title = rule.title or f"no data on {rule.channel} for {round(age)} s"
                self._raise(rule, rule.channel, title, detail, {"channel": rule.channel}, now)

    def save_cursors(self) -> None:
        """Persist how far each channel was evaluated (each tick and on stop; a crash
        re-evaluates at most one tick's events, which de-duplication absorbs)."""
        for channel, (epoch, offset) in list(self._cursors.items()):
            if self._saved.get(channel) != (epoch, offset):
                self.hub.ops.set_rule_cursor(channel, epoch, offset)
                self._saved[channel] = (epoch, offset)
