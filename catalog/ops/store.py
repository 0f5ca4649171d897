"""Live operations records: alerts, dispatch orders and each order's history.

Additive tables next to the catalog's own, on the same database.  An alert is
de-duplicated by ``open_key`` (rule + key while the alert is not resolved): a
unique column, so two hub processes evaluating the same rule cannot open the
same alert twice.  Every change to an order is one row of ``order_events`` —
the full history, in order.

Opening, acknowledging and resolving an alert and every change to an order commit with
their entry in the audit chain (``alert.*``, ``order.*``), which binds the alert or order
row and the history row the change wrote: the history tables are covered by the chain.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, String, Text, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from catalog.audit.log import AuditLog, AuditTx
from catalog.db import aware, utcnow
from catalog.errors import Conflict, InvalidRequest, NotFound
from catalog.outbox import Event, stage

#: The events that announce a change to an alert, or to an order (one per channel), staged
#: in the catalog's outbox in the transaction that makes the change (catalog/outbox.py).
AlertEvents = Callable[["Alert"], Sequence[Event]]
OrderEvents = Callable[["Order", "OrderEvent"], Sequence[Event]]

ALERT_STATUSES = ("open", "acknowledged", "resolved")
ORDER_STATUSES = ("open", "acknowledged", "in_progress", "closed", "cancelled")
PRIORITIES = ("low", "normal", "high", "urgent")


class OpsBase(DeclarativeBase):
    pass


class AlertRow(OpsBase):
    __tablename__ = "ops_alerts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(100), index=True)
    key: Mapped[str] = mapped_column(String(400))
    open_key: Mapped[str | None] = mapped_column(String(520), unique=True, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(400))
    source: Mapped[str] = mapped_column(String(200))
    detail_json: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(Integer, default=1)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class RuleCursorRow(OpsBase):
    """The last offset of a channel the alert engine has evaluated (resume after restart)."""

    __tablename__ = "ops_rule_cursors"
    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(64))
    offset: Mapped[int] = mapped_column(BigInteger)


class OrderRow(OpsBase):
    __tablename__ = "ops_orders"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    target: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[str] = mapped_column(String(16))
    instructions: Mapped[str] = mapped_column(Text)
    alert_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    event_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    opened_by: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    escalated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OrderEventRow(OpsBase):
    __tablename__ = "ops_order_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    data_json: Mapped[str | None] = mapped_column(Text, nullable=True)


def _iso(dt: datetime | None) -> str | None:
    dt = aware(dt)
    return dt.isoformat() if dt is not None else None


@dataclass(frozen=True)
class Alert:
    id: str
    rule_id: str
    key: str
    status: str
    severity: str
    title: str
    source: str
    detail: dict[str, Any]
    count: int
    opened_at: str
    last_seen_at: str
    acked_by: str | None
    acked_at: str | None
    resolved_by: str | None
    resolved_at: str | None
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _alert(r: AlertRow) -> Alert:
    return Alert(
        id=r.id,
        rule_id=r.rule_id,
        key=r.key,
        status=r.status,
        severity=r.severity,
        title=r.title,
        source=r.source,
        detail=json.loads(r.detail_json),
        count=r.count,
        opened_at=_iso(r.opened_at) or "",
        last_seen_at=_iso(r.last_seen_at) or "",
        acked_by=r.acked_by,
        acked_at=_iso(r.acked_at),
        resolved_by=r.resolved_by,
        resolved_at=_iso(r.resolved_at),
        note=r.note,
    )


@dataclass(frozen=True)
class OrderEvent:
    order_id: str
    seq: int
    action: str
    actor: str
    at: str
    status: str
    note: str | None
    data: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Order:
    id: str
    target: str
    status: str
    priority: str
    instructions: str
    alert_id: str | None
    event: dict[str, Any] | None
    deadline: str | None
    opened_by: str
    opened_at: str
    updated_at: str
    escalated_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _order(r: OrderRow) -> Order:
    return Order(
        id=r.id,
        target=r.target,
        status=r.status,
        priority=r.priority,
        instructions=r.instructions,
        alert_id=r.alert_id,
        event=json.loads(r.event_json) if r.event_json else None,
        deadline=_iso(r.deadline),
        opened_by=r.opened_by,
        opened_at=_iso(r.opened_at) or "",
        updated_at=_iso(r.updated_at) or "",
        escalated_at=_iso(r.escalated_at),
    )


def _order_event(e: OrderEventRow) -> OrderEvent:
    return OrderEvent(
        order_id=e.order_id,
        seq=e.id,
        action=e.action,
        actor=e.actor,
        at=_iso(e.at) or "",
        status=e.status,
        note=e.note,
        data=json.loads(e.data_json) if e.data_json else None,
    )


# Which order action is allowed from which status, and the status it leads to.
ORDER_TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": (("open",), "acknowledged"),
    "progress": (("open", "acknowledged", "in_progress"), "in_progress"),
    "close": (("open", "acknowledged", "in_progress"), "closed"),
    "cancel": (("open", "acknowledged", "in_progress"), "cancelled"),
}


def _alert_entry(tx: AuditTx, action: str, alert: Alert, who: str) -> None:
    tx.record(
        action=f"alert.{action}",
        principal=who,
        detail={
            "alert": alert.id,
            "rule": alert.rule_id,
            "key": alert.key,
            "severity": alert.severity,
            "status": alert.status,
            **({"note": alert.note} if alert.note and action != "open" else {}),
        },
        binds=[("ops_alerts", alert.id)],
    )


def _order_entry(tx: AuditTx, row: OrderRow, ev: OrderEventRow) -> None:
    """``order.<action>``: the order, the history row (its id is ``seq``), the new status."""
    detail: dict[str, Any] = {
        "order": row.id,
        "seq": ev.id,
        "target": row.target,
        "status": ev.status,
        "priority": row.priority,
    }
    if ev.note:
        detail["note"] = ev.note
    if ev.action == "open":
        detail["alert"] = row.alert_id
        detail["deadline"] = _iso(row.deadline)
    tx.record(
        action=f"order.{ev.action}",
        principal=ev.actor,
        agency="" if ev.actor == "system" else None,
        detail=detail,
        binds=[("ops_orders", row.id), ("ops_order_events", ev.id)],
    )


class OpsStore:
    """Alerts and orders on the catalog's database (tables created on open); changes are
    recorded in ``audit``, the catalog's chain."""

    def __init__(self, engine: Engine, *, audit: AuditLog) -> None:
        self.engine = engine
        self.audit = audit
        OpsBase.metadata.create_all(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    # -- alerts ---------------------------------------------------------------------

    def raise_alert(
        self,
        rule_id: str,
        key: str,
        *,
        severity: str,
        title: str,
        source: str,
        detail: dict[str, Any],
        at: datetime | None = None,
        events: AlertEvents | None = None,
    ) -> tuple[Alert, bool]:
        """Open an alert, or bump the open one for the same rule+key. Returns (alert, new);
        ``events`` announce a new one (a repeat only bumps the count)."""
        now = at or utcnow()
        open_key = f"{rule_id}|{key}"
        for _ in range(3):  # another process may open the same alert concurrently
            try:
                with self.audit.transaction() as tx:
                    s = tx.session
                    row = s.scalars(select(AlertRow).where(AlertRow.open_key == open_key)).first()
                    if row is not None:
                        row.count += 1
                        row.last_seen_at = now
                        row.detail_json = json.dumps(detail, ensure_ascii=False, default=str)
                        s.flush()
                        return _alert(row), False
                    row = AlertRow(
                        id=str(uuid.uuid4()),
                        rule_id=rule_id,
                        key=key,
                        open_key=open_key,
                        status="open",
                        severity=severity,
                        title=title,
                        source=source,
                        detail_json=json.dumps(detail, ensure_ascii=False, default=str),
                        count=1,
                        opened_at=now,
                        last_seen_at=now,
                    )
                    s.add(row)
                    s.flush()
                    alert = _alert(row)
                    _alert_entry(tx, "open", alert, "system")
                    if events is not None:
                        stage(s, events(alert))
                    return alert, True
            except IntegrityError:
                continue
        raise Conflict(f"could not record alert {open_key!r}", rule=rule_id)

    def open_alert_for(self, rule_id: str, key: str) -> Alert | None:
        with self.session() as s:
            row = s.scalars(select(AlertRow).where(AlertRow.open_key == f"{rule_id}|{key}")).first()
            return _alert(row) if row is not None else None

    def get_alert(self, alert_id: str) -> Alert:
        with self.session() as s:
            row = s.get(AlertRow, alert_id)
            if row is None:
                raise NotFound(f"no alert {alert_id!r}", alert=alert_id)
            return _alert(row)

    def list_alerts(self, status: str | None = None, limit: int = 200) -> list[Alert]:
        if status is not None and status not in ALERT_STATUSES:
            raise InvalidRequest(
                f"unknown alert status {status!r}; allowed: {', '.join(ALERT_STATUSES)}"
            )
        q = select(AlertRow).order_by(AlertRow.opened_at.desc()).limit(limit)
        if status:
            q = q.where(AlertRow.status == status)
        with self.session() as s:
            return [_alert(r) for r in s.scalars(q)]

    def acknowledge_alert(
        self,
        alert_id: str,
        who: str,
        note: str | None = None,
        events: AlertEvents | None = None,
    ) -> Alert:
        with self.audit.transaction() as tx:
            s = tx.session
            row = s.get(AlertRow, alert_id)
            if row is None:
                raise NotFound(f"no alert {alert_id!r}", alert=alert_id)
            if row.status != "open":
                raise Conflict(
                    f"alert {alert_id!r} is {row.status}, only an open alert can be acknowledged",
                    alert=alert_id,
                    status=row.status,
                )
            row.status = "acknowledged"
            row.acked_by, row.acked_at = who, utcnow()
            row.note = note or row.note
            s.flush()
            alert = _alert(row)
            _alert_entry(tx, "ack", alert, who)
            if events is not None:
                stage(s, events(alert))
            return alert

    def resolve_alert(
        self,
        alert_id: str,
        who: str,
        note: str | None = None,
        events: AlertEvents | None = None,
    ) -> Alert:
        with self.audit.transaction() as tx:
            s = tx.session
            row = s.get(AlertRow, alert_id)
            if row is None:
                raise NotFound(f"no alert {alert_id!r}", alert=alert_id)
            if row.status == "resolved":
                raise Conflict(f"alert {alert_id!r} is already resolved", alert=alert_id)
            row.status = "resolved"
            row.open_key = None  # the next trigger of this rule+key opens a new alert
            row.resolved_by, row.resolved_at = who, utcnow()
            row.note = note or row.note
            s.flush()
            alert = _alert(row)
            _alert_entry(tx, "resolve", alert, who)
            if events is not None:
                stage(s, events(alert))
            return alert

    def rule_cursor(self, channel: str, epoch: str) -> int | None:
        with self.session() as s:
            row = s.get(RuleCursorRow, channel)
            if row is None or row.epoch != epoch:
                return None
            return row.offset

    def set_rule_cursor(self, channel: str, epoch: str, offset: int) -> None:
        with self.session() as s:
            row = s.get(RuleCursorRow, channel)
            if row is None:
                s.add(RuleCursorRow(channel=channel, epoch=epoch, offset=offset))
            else:
                row.epoch, row.offset = epoch, offset

    # -- orders ---------------------------------------------------------------------

    def open_order(
        self,
        *,
        target: str,
        instructions: str,
        opened_by: str,
        priority: str = "normal",
        alert_id: str | None = None,
        event: dict[str, Any] | None = None,
        deadline: datetime | None = None,
        events: OrderEvents | None = None,
    ) -> Order:
        if priority not in PRIORITIES:
            raise InvalidRequest(
                f"unknown priority {priority!r}; allowed: {', '.join(PRIORITIES)}",
                field="priority",
            )
        now = utcnow()
        with self.audit.transaction() as tx:
            s = tx.session
            if alert_id is not None and s.get(AlertRow, alert_id) is None:
                raise NotFound(f"no alert {alert_id!r}", alert=alert_id)
            row = OrderRow(
                id=str(uuid.uuid4()),
                target=target,
                status="open",
                priority=priority,
                instructions=instructions,
                alert_id=alert_id,
                event_json=json.dumps(event, ensure_ascii=False, default=str) if event else None,
                deadline=deadline,
                opened_by=opened_by,
                opened_at=now,
                updated_at=now,
            )
            s.add(row)
            opened = OrderEventRow(
                order_id=row.id, action="open", actor=opened_by, at=now, status="open"
            )
            s.add(opened)
            s.flush()
            _order_entry(tx, row, opened)
            order = _order(row)
            if events is not None:
                stage(s, events(order, _order_event(opened)))
            return order

    def get_order(self, order_id: str) -> Order:
        with self.session() as s:
            row = s.get(OrderRow, order_id)
            if row is None:
                raise NotFound(f"no order {order_id!r}", order=order_id)
            return _order(row)

    def list_orders(
        self, *, targets: list[str] | None = None, status: str | None = None, limit: int = 200
    ) -> list[Order]:
        if status is not None and status not in ORDER_STATUSES:
            raise InvalidRequest(
                f"unknown order status {status!r}; allowed: {', '.join(ORDER_STATUSES)}"
            )
        q = select(OrderRow).order_by(OrderRow.opened_at.desc()).limit(limit)
        if targets is not None:
            q = q.where(OrderRow.target.in_(targets))
        if status:
            q = q.where(OrderRow.status == status)
        with self.session() as s:
            return [_order(r) for r in s.scalars(q)]

    def order_history(self, order_id: str) -> list[OrderEvent]:
        with self.session() as s:
            if s.get(OrderRow, order_id) is None:
                raise NotFound(f"no order {order_id!r}", order=order_id)
            q = select(OrderEventRow).where(OrderEventRow.order_id == order_id)
            return [_order_event(e) for e in s.scalars(q.order_by(OrderEventRow.id))]

    def act_on_order(
        self,
        order_id: str,
        action: str,
        actor: str,
        note: str | None = None,
        data: dict[str, Any] | None = None,
        events: OrderEvents | None = None,
    ) -> tuple[Order, OrderEvent]:
        """Apply acknowledge / progress / close / cancel; records the event in the history."""
        if action not in ORDER_TRANSITIONS:
            raise InvalidRequest(
                f"unknown order action {action!r}; allowed: {', '.join(ORDER_TRANSITIONS)}",
                action=action,
            )
        allowed_from, to = ORDER_TRANSITIONS[action]
        now = utcnow()
        with self.audit.transaction() as tx:
            s = tx.session
            row = s.get(OrderRow, order_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no order {order_id!r}", order=order_id)
            if row.status not in allowed_from:
                raise Conflict(
                    f"order {order_id!r} is {row.status}; cannot {action} it",
                    order=order_id,
                    status=row.status,
                )
            row.status, row.updated_at = to, now
            ev = OrderEventRow(
                order_id=order_id,
                action=action,
                actor=actor,
                at=now,
                status=to,
                note=note,
                data_json=json.dumps(data, ensure_ascii=False, default=str) if data else None,
            )
            s.add(ev)
            s.flush()
            _order_entry(tx, row, ev)
            order, change = _order(row), _order_event(ev)
            if events is not None:
                stage(s, events(order, change))
            return order, change

    def escalate_overdue(
        self, now: datetime | None = None, events: OrderEvents | None = None
    ) -> list[tuple[Order, OrderEvent]]:
        """Mark every still-unacknowledged order past its deadline as escalated (once)."""
        now = now or utcnow()
        out: list[tuple[Order, OrderEvent]] = []
        q = select(OrderRow.id).where(
            OrderRow.status == "open",
            OrderRow.escalated_at.is_(None),
            OrderRow.deadline.is_not(None),
            OrderRow.deadline <= now,
        )
        with self.session() as s:  # a look first: the write lock only when there is work
            if s.scalars(q.limit(1)).first() is None:
                return out
        with self.audit.transaction() as tx:
            s = tx.session
            for order_id in list(s.scalars(q)):
                # Conditional update: of several hub processes, exactly one escalates.
                claimed = s.execute(
                    update(OrderRow)
                    .where(OrderRow.id == order_id, OrderRow.escalated_at.is_(None))
                    .values(escalated_at=now, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                if getattr(claimed, "rowcount", 0) != 1:
                    continue
                row = s.get(OrderRow, order_id, populate_existing=True)
                assert row is not None
                ev = OrderEventRow(
                    order_id=row.id,
                    action="escalate",
                    actor="system",
                    at=now,
                    status=row.status,
                    note="not acknowledged by its deadline",
                )
                s.add(ev)
                s.flush()
                _order_entry(tx, row, ev)
                order, change = _order(row), _order_event(ev)
                if events is not None:
                    stage(s, events(order, change))
                out.append((order, change))
        return out
