"""Access requests and grants: file, list, approve (possibly narrowed), refuse, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from catalog.access.grants import Grant
from catalog.access.policy import can_manage
from catalog.errors import AccessDenied
from catalog.identity.store import Principal
from hub.api.common.deps import HubDep, PrincipalDep
from hub.api.common.errors import error_responses
from hub.api.common.limits import Moment
from hub.api.common.links import links
from hub.assembly.context import Hub

router = APIRouter(tags=["grants"], responses=error_responses(400, 401, 403, 404, 409, 422))


class AccessRequestIn(BaseModel):
    purpose: str = Field(description="what the data is for (required by the sharing rules)")
    columns: list[str] | None = Field(default=None, description="columns wanted; all if omitted")
    row_filter: dict[str, list[str]] | None = Field(
        default=None, description='rows wanted, e.g. {"district_code": ["520102"]}'
    )
    unmask: list[str] = Field(default_factory=list, description="personal columns to see unmasked")
    expires_at: Moment | None = Field(default=None, description="when the grant should end")


class ApproveIn(BaseModel):
    columns: list[str] | None = Field(default=None, description="narrow the columns")
    row_filter: dict[str, list[str]] | None = Field(default=None, description="narrow the rows")
    unmask: list[str] | None = Field(default=None, description="narrow the unmasked columns")
    expires_at: Moment | None = Field(default=None, description="set or shorten the expiry")


class ReasonIn(BaseModel):
    reason: str = Field(min_length=1, description="why (sent to the requester)")


class GrantOut(BaseModel):
    id: str
    dataset: str
    agency: str
    requested_by: str
    purpose: str
    columns: list[str] | None
    row_filter: dict[str, list[str]] | None
    unmask: list[str]
    expires_at: datetime | None
    status: str = Field(description="pending, approved, refused, revoked or expired")
    requested_at: datetime
    due_at: datetime = Field(
        description=(
            "answer deadline: the end (Beijing time) of the 10th working day of the official"
            " calendar after the day of filing"
        )
    )
    due_at_estimated: bool = Field(
        description=(
            "true when the holiday calendar does not cover a year on the way and Mon–Fri was"
            " counted for it (docs/access.md)"
        )
    )
    overdue: bool
    decided_at: datetime | None
    decided_by: str | None
    reason: str | None


_ONE = "/v1/access-requests/{request_id}"
_BY_ID = {"request_id": "$response.body#/id"}
_DECIDE = {
    "Approve": ("POST", _ONE + "/approve", _BY_ID),
    "Refuse": ("POST", _ONE + "/refuse", _BY_ID),
    "Revoke": ("POST", _ONE + "/revoke", _BY_ID),
}


def _out(g: Grant, hub: Hub) -> dict[str, Any]:
    return g.to_dict(hub.clock.now())


def _steward_of(hub: Hub, principal: Principal, g: Grant) -> None:
    owner = hub.store.get_dataset(g.dataset_id).agency_id
    if not can_manage(principal, owner):
        raise AccessDenied(
            f"only a steward of {owner!r} may decide requests for {g.dataset_id!r}",
            request=g.id,
        )


@router.post(
    "/v1/datasets/{dataset_id}/access-requests",
    response_model=GrantOut,
    status_code=201,
    summary="Request access to a dataset (developers and stewards of other agencies)",
    responses={201: links(**_DECIDE, GetRequest=("GET", _ONE, _BY_ID))},
)
def request_access(
    dataset_id: str, body: AccessRequestIn, hub: HubDep, principal: PrincipalDep
) -> dict[str, Any]:
    d = hub.store.get_dataset(dataset_id)
    if principal.role not in ("developer", "steward"):
        raise AccessDenied("only developers and stewards file access requests", role=principal.role)
    if principal.agency_id == d.agency_id:
        raise AccessDenied(f"{dataset_id!r} belongs to your agency; no request is needed")
    if d.sharing == "none":
        raise AccessDenied(
            f"{dataset_id!r} is not shared (不予共享): {d.manifest.sharing.legal_basis}",
            dataset=dataset_id,
        )
    g = hub.grants.request(
        d,
        agency_id=principal.agency_id,
        requested_by=principal.id,
        purpose=body.purpose,
        columns=body.columns,
        row_filter=body.row_filter,
        unmask=body.unmask,
        expires_at=body.expires_at,
    )
    return _out(g, hub)


@router.get(
    "/v1/access-requests",
    response_model=list[GrantOut],
    summary="Requests you filed, or (stewards) those for your agency's datasets",
)
def list_requests(
    hub: HubDep,
    principal: PrincipalDep,
    dataset: str | None = None,
    status: Annotated[str | None, Query(description="pending, approved, …, expired")] = None,
    overdue: bool | None = None,
) -> list[dict[str, Any]]:
    if principal.is_admin:
        grants = hub.grants.list_grants(dataset_ids=[dataset] if dataset else None)
    else:
        owned = [d.id for d in hub.store.list_datasets() if d.agency_id == principal.agency_id]
        grants = hub.grants.list_grants(
            dataset_ids=[dataset] if dataset else None,
            agency_id=principal.agency_id,
            owner_datasets=owned if principal.role == "steward" else None,
        )
    out = [_out(g, hub) for g in grants]
    if status is not None:
        out = [g for g in out if g["status"] == status]
    if overdue is not None:
        out = [g for g in out if g["overdue"] is overdue]
    return out


@router.get("/v1/access-requests/{request_id}", response_model=GrantOut, summary="One request")
def get_request(request_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    g = hub.grants.get(request_id)
    if g.agency_id != principal.agency_id:
        _steward_of(hub, principal, g)
    return _out(g, hub)


@router.post(
    "/v1/access-requests/{request_id}/approve",
    response_model=GrantOut,
    summary="Approve a request, possibly narrowed (steward of the owning agency)",
    responses={200: links(Revoke=("POST", _ONE + "/revoke", _BY_ID))},
)
def approve(
    request_id: str, body: ApproveIn, hub: HubDep, principal: PrincipalDep
) -> dict[str, Any]:
    g = hub.grants.get(request_id)
    _steward_of(hub, principal, g)
    return _out(
        hub.grants.approve(
            request_id,
            by=principal.id,
            dataset=hub.store.get_dataset(g.dataset_id),
            columns=body.columns,
            row_filter=body.row_filter,
            unmask=body.unmask,
            expires_at=body.expires_at,
        ),
        hub,
    )


@router.post(
    "/v1/access-requests/{request_id}/refuse",
    response_model=GrantOut,
    summary="Refuse a request with a reason (steward of the owning agency)",
)
def refuse(request_id: str, body: ReasonIn, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    _steward_of(hub, principal, hub.grants.get(request_id))
    return _out(hub.grants.refuse(request_id, by=principal.id, reason=body.reason), hub)


@router.post(
    "/v1/access-requests/{request_id}/revoke",
    response_model=GrantOut,
    summary="Revoke a grant (steward of the owning agency)",
)
def revoke(request_id: str, body: ReasonIn, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    _steward_of(hub, principal, hub.grants.get(request_id))
    return _out(hub.grants.revoke(request_id, by=principal.id, reason=body.reason), hub)
