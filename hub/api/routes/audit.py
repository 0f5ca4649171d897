"""The audit log: stewards see access to their agency's data, admins see everything;
admins verify the chain and export its head for anchoring."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from catalog.errors import AccessDenied
from catalog.identity.store import Principal
from hub.api.common.deps import HubDep, PrincipalDep
from hub.api.common.errors import error_responses
from hub.api.common.limits import MAX_INT32

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=error_responses(401, 403, 422))


class AuditEntryOut(BaseModel):
    seq: int
    at: str
    action: str
    principal: str
    agency: str
    datasets: dict[str, int | None]
    columns: dict[str, list[str]]
    row_count: int | None
    sql_fingerprint: str | None
    outcome: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str
    owners: dict[str, str] | None = Field(
        default=None, description="dataset → owning agency (what the steward's view indexes)"
    )
    binds: list[list[Any]] | None = Field(
        default=None, description="[table, key, digest] of each row the change left"
    )
    key_id: str | None = Field(default=None, description="id of the key that sealed the entry")


class VerifyOut(BaseModel):
    ok: bool
    entries: int
    bad_seq: int | None
    problem: str


class VerifyIn(BaseModel):
    anchors: list[dict[str, Any]] = Field(
        default_factory=list, description="exported heads the chain must still extend"
    )


class AnchorOut(BaseModel):
    kind: str
    version: int
    seq: int = Field(description="the last entry")
    hash: str = Field(description="its seal")
    at: str | None = Field(description="when it was appended")
    entries: int
    exported_at: str
    key_id: str | None
    alg: str = Field(description="HMAC-SHA256 (keyed hub) or SHA256 (a checksum, no key)")
    signature: str


def _admin(principal: Principal, what: str) -> None:
    if not principal.is_admin:
        raise AccessDenied(f"only admins {what}")


@router.get("", response_model=list[AuditEntryOut], summary="Audit entries, newest first")
def list_audit(
    hub: HubDep,
    principal: PrincipalDep,
    dataset: str | None = None,
    principal_id: Annotated[str | None, Query(alias="principal")] = None,
    action: Annotated[
        str | None,
        Query(
            description="an action (`query`, `subscribe`, `order.close`) or a family (`order.*`)"
        ),
    ] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_INT32, description="only entries with seq above this")
    ] = 0,
    limit: Annotated[int, Query(gt=0, le=1000)] = 100,
) -> list[dict[str, Any]]:
    if principal.is_admin:
        scope = None
    elif principal.role == "steward":
        scope = principal.agency_id
    else:
        raise AccessDenied("only stewards (their agency's data) and admins read the audit log")
    entries = hub.audit.entries(
        agency_data=scope,
        dataset=dataset,
        principal=principal_id,
        action=action,
        after=after,
        limit=limit,
    )
    return [e.to_dict() for e in entries]


@router.get("/verify", response_model=VerifyOut, summary="Verify the hash chain (admin)")
async def verify_audit(hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    _admin(principal, "verify the audit log")
    r = await run_in_threadpool(hub.audit.verify)
    return {"ok": r.ok, "entries": r.entries, "bad_seq": r.bad_seq, "problem": r.problem}


@router.post(
    "/verify",
    response_model=VerifyOut,
    summary="Verify the hash chain against exported anchors (admin)",
)
async def verify_audit_anchored(
    body: VerifyIn, hub: HubDep, principal: PrincipalDep
) -> dict[str, Any]:
    _admin(principal, "verify the audit log")
    r = await run_in_threadpool(hub.audit.verify, body.anchors)
    return {"ok": r.ok, "entries": r.entries, "bad_seq": r.bad_seq, "problem": r.problem}


@router.get(
    "/anchor",
    response_model=AnchorOut,
    summary="The signed head of the verified chain, to keep elsewhere (admin)",
    responses=error_responses(409),
)
async def export_anchor(hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    """Verifies the chain first: a chain that does not verify is not anchored (409)."""
    _admin(principal, "export the audit anchor")
    return await run_in_threadpool(hub.audit.anchor)
