"""Dispatch orders: open, acknowledge, report progress, close; escalate when overdue.

An order targets one agency or one unit (a principal).  Every change is stored
(``ops_order_events``: the order's full history) with its audit entry in the same
transaction (``catalog.ops.store``), and published on
``orders:<target>`` — and, for a unit, on ``orders:<its agency>`` too, so the
agency's desk sees its units' orders.  Escalations also go out on ``alerts``.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from catalog.access.disclosure import carries_values, order_event_source, source_dataset
from catalog.domain.channels import ALERTS, orders_channel
from catalog.errors import AccessDenied, InvalidRequest, NotFound
from catalog.identity.store import Principal
from catalog.ops.store import Order, OrderEvent, OrderEvents
from catalog.outbox import Event
from hub.live.channels import is_ops, order_targets
from hub.live.host import LiveHub

ORDER_ACTIONS = ("acknowledge", "progress", "close", "cancel")
EVENT_TYPES = {
    "open": "order.opened",
    "acknowledge": "order.acknowledged",
    "progress": "order.progress",
    "close": "order.closed",
    "cancel": "order.cancelled",
    "escalate": "order.escalated",
}


def _target_channels(hub: LiveHub, target: str) -> list[str]:
    names = [orders_channel(target)]
    with contextlib.suppress(NotFound):
        unit = hub.store.identity.get_principal(target)
        names.append(orders_channel(unit.agency_id))
    return names


def _events(hub: LiveHub, *, also: tuple[str, ...] = ()) -> OrderEvents:
    """The events announcing an order's change on its channels, made in the transaction
    that changes it (staged in the catalog's outbox: an order moved on is announced)."""

    def events(order: Order, event: OrderEvent) -> list[Event]:
        data = {"order": order.to_dict(), "change": event.to_dict()}
        source = {"order": order.id, "actor": event.actor}
        channels = (*_target_channels(hub, order.target), *also)
        return [Event(ch, EVENT_TYPES[event.action], data, source) for ch in channels]

    return events


def _publish(hub: LiveHub, order: Order, event: OrderEvent) -> None:
    """After the change is committed — with its audit entry and its staged events, in one
    transaction (catalog.ops.store) — publish the events."""
    hub.announce()


def _check_target(hub: LiveHub, target: str) -> None:
    try:
        hub.store.identity.get_principal(target)
        return
    except NotFound:
        pass
    try:
        hub.store.identity.get_agency(target)
    except NotFound:
        raise InvalidRequest(
            f"order target {target!r} is neither a registered agency nor a unit",
            field="target",
        ) from None


def _sourced(
    hub: LiveHub, event: dict[str, Any] | None, alert_id: str | None
) -> dict[str, Any] | None:
    """An order's event that carries values must say which dataset they came from (its
    ``channel``, or the alert it answers): every receiver gets them as its own access to
    that dataset shows them (catalog/access/disclosure.py), never as the operator typed them."""
    if not carries_values(event):
        return event
    assert event is not None
    if order_event_source(event) is not None:
        return event
    if alert_id is not None:
        source = hub.ops.get_alert(alert_id).source
        if source_dataset(source) is not None:
            return {**event, "channel": source}
    raise InvalidRequest(
        "an order's event with values must name its source channel "
        '(e.g. "channel": "feed:air_readings") or answer an alert',
        field="event.channel",
    )


def open_order(
    hub: LiveHub,
    principal: Principal,
    *,
    target: str,
    instructions: str,
    priority: str = "normal",
    alert_id: str | None = None,
    event: dict[str, Any] | None = None,
    deadline: datetime | None = None,
) -> Order:
    if not is_ops(principal):
        raise AccessDenied("only operators and admins open dispatch orders", role=principal.role)
    if not instructions.strip():
        raise InvalidRequest("instructions must not be empty", field="instructions")
    _check_target(hub, target)
    event = _sourced(hub, event, alert_id)
    order = hub.ops.open_order(
        target=target,
        instructions=instructions,
        opened_by=principal.id,
        priority=priority,
        alert_id=alert_id,
        event=event,
        deadline=deadline,
        events=_events(hub),
    )
    (opened,) = hub.ops.order_history(order.id)
    _publish(hub, order, opened)
    return order


def may_see(hub: LiveHub, principal: Principal, order: Order) -> bool:
    if is_ops(principal) or order.target in order_targets(principal):
        return True
    # An agency's principals also follow the orders of that agency's units.
    with contextlib.suppress(NotFound):
        return hub.store.identity.get_principal(order.target).agency_id == principal.agency_id
    return False


def get_order(hub: LiveHub, principal: Principal, order_id: str) -> Order:
    order = hub.ops.get_order(order_id)
    if not may_see(hub, principal, order):
        raise NotFound(f"no order {order_id!r}", order=order_id)
    return order


def act(
    hub: LiveHub,
    principal: Principal,
    order_id: str,
    action: str,
    note: str | None = None,
    data: dict[str, Any] | None = None,
) -> Order:
    """A unit (or its agency, or an operator) acts on an order; cancel is operators' only."""
    get_order(hub, principal, order_id)
    if action == "cancel" and not is_ops(principal):
        raise AccessDenied("only operators and admins cancel orders", role=principal.role)
    order, event = hub.ops.act_on_order(
        order_id, action, principal.id, note, data, events=_events(hub)
    )
    _publish(hub, order, event)
    return order


def escalate_overdue(hub: LiveHub) -> list[Order]:
    out = []
    for order, event in hub.ops.escalate_overdue(events=_events(hub, also=(ALERTS,))):
        _publish(hub, order, event)
        out.append(order)
    return out
