"""Live operations over REST: presence, alerts (list/ack/resolve), dispatch orders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from catalog.errors import AccessDenied
from catalog.identity.store import Principal
from catalog.ops.store import Alert
from hub.api.common.deps import HubDep, PrincipalDep
from hub.api.common.errors import error_responses
from hub.api.common.limits import Moment
from hub.api.common.links import links
from hub.assembly.context import Hub
from hub.live import alerts, dispatch
from hub.live.channels import disclose_alert, disclose_order, is_ops, order_targets

router = APIRouter(
    prefix="/v1", tags=["dispatch"], responses=error_responses(400, 401, 403, 404, 409, 422)
)


def _ops_only(principal: Principal) -> None:
    if not is_ops(principal):
        raise AccessDenied("for operators and admins only", role=principal.role)


@router.get("/presence", summary="Connections to this hub process (operators)")
def presence(request: Request, principal: PrincipalDep) -> dict[str, Any]:
    _ops_only(principal)
    conns = request.app.state.ops.presence.list()
    return {"connections": conns, "principals": sorted({c["principal"] for c in conns})}


class Note(BaseModel):
    note: str | None = Field(default=None, max_length=4000)


_ALERT = "/v1/alerts/{alert_id}"
_FIRST_ALERT = {"alert_id": "$response.body#/alerts/0/id"}
_ORDER = "/v1/orders/{order_id}"


@router.get(
    "/alerts",
    summary="Alerts, newest first (operators)",
    responses={
        200: links(
            GetAlert=("GET", _ALERT, _FIRST_ALERT),
            Acknowledge=("POST", _ALERT + "/ack", _FIRST_ALERT),
            Resolve=("POST", _ALERT + "/resolve", _FIRST_ALERT),
        )
    },
)
def list_alerts(
    hub: HubDep,
    principal: PrincipalDep,
    status: Literal["open", "acknowledged", "resolved"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    _ops_only(principal)
    found = hub.ops.list_alerts(status, limit)
    return {"alerts": [disclose_alert(hub, principal, a.to_dict()) for a in found]}


@router.get("/alerts/{alert_id}", summary="One alert")
def get_alert(alert_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    _ops_only(principal)
    return disclose_alert(hub, principal, hub.ops.get_alert(alert_id).to_dict())


@router.post("/alerts/{alert_id}/ack", summary="Acknowledge an open alert")
async def ack_alert(
    alert_id: str, hub: HubDep, principal: PrincipalDep, body: Note | None = None
) -> dict[str, Any]:
    return await _alert_step(alerts.acknowledge, alert_id, hub, principal, body)


@router.post("/alerts/{alert_id}/resolve", summary="Resolve an alert")
async def resolve_alert(
    alert_id: str, hub: HubDep, principal: PrincipalDep, body: Note | None = None
) -> dict[str, Any]:
    return await _alert_step(alerts.resolve, alert_id, hub, principal, body)


async def _alert_step(
    step: Callable[[Hub, Principal, str, str | None], Alert],
    alert_id: str,
    hub: Hub,
    principal: Principal,
    body: Note | None,
) -> dict[str, Any]:
    """Acknowledge or resolve (the live wing checks the role), answer as the caller sees it."""
    alert = await run_in_threadpool(step, hub, principal, alert_id, body.note if body else None)
    return disclose_alert(hub, principal, alert.to_dict())


class OrderIn(BaseModel):
    target: str = Field(min_length=1, max_length=64, description="agency id or unit id")
    instructions: str = Field(min_length=1, max_length=8000)
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    alert_id: str | None = Field(default=None, max_length=200)
    event: dict[str, Any] | None = Field(default=None, description="the related event")
    deadline: Moment | None = Field(default=None, description="acknowledge by (ISO 8601)")


@router.post(
    "/orders",
    status_code=201,
    summary="Open a dispatch order (operators)",
    responses={
        201: links(
            GetOrder=("GET", _ORDER, {"order_id": "$response.body#/id"}),
            Act=("POST", _ORDER + "/{action}", {"order_id": "$response.body#/id"}),
        )
    },
)
async def open_order(body: OrderIn, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    order = await run_in_threadpool(
        lambda: dispatch.open_order(
            hub,
            principal,
            target=body.target,
            instructions=body.instructions,
            priority=body.priority,
            alert_id=body.alert_id,
            event=body.event,
            deadline=body.deadline,
        )
    )
    return disclose_order(hub, principal, order.to_dict())


@router.get(
    "/orders",
    summary="Orders the caller may see, newest first",
    responses={200: links(GetOrder=("GET", _ORDER, {"order_id": "$response.body#/orders/0/id"}))},
)
def list_orders(
    hub: HubDep,
    principal: PrincipalDep,
    status: Literal["open", "acknowledged", "in_progress", "closed", "cancelled"] | None = None,
    target: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    if is_ops(principal):
        targets = [target] if target else None
    else:
        mine = order_targets(principal)
        targets = [t for t in mine if t == target] if target else mine
    found = hub.ops.list_orders(targets=targets, status=status, limit=limit)
    return {"orders": [disclose_order(hub, principal, o.to_dict()) for o in found]}


@router.get("/orders/{order_id}", summary="One order with its full history")
def get_order(order_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    order = dispatch.get_order(hub, principal, order_id)
    shown = disclose_order(hub, principal, order.to_dict())
    return {**shown, "history": [e.to_dict() for e in hub.ops.order_history(order_id)]}


class OrderAction(BaseModel):
    note: str | None = Field(default=None, max_length=4000)
    data: dict[str, Any] | None = Field(default=None, description="e.g. position, photos")


@router.post("/orders/{order_id}/{action}", summary="acknowledge | progress | close | cancel")
async def act_on_order(
    order_id: str,
    action: Literal["acknowledge", "progress", "close", "cancel"],
    hub: HubDep,
    principal: PrincipalDep,
    body: OrderAction | None = None,
) -> dict[str, Any]:
    note, data = (body.note, body.data) if body else (None, None)
    order = await run_in_threadpool(dispatch.act, hub, principal, order_id, action, note, data)
    return disclose_order(hub, principal, order.to_dict())
