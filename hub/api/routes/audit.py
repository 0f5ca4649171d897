"""The audit log: stewards see access to their agency's data, admins see everything."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from catalog.errors import AccessDenied
from hub.api.deps import HubDep, PrincipalDep
from hub.api.errors import error_responses
from hub.api.limits import MAX_INT32

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


class VerifyOut(BaseModel):
    ok: bool
    entries: int
    bad_seq: int | None
    problem: str


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
def verify_audit(hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    if not principal.is_admin:
        raise AccessDenied("only admins verify the audit log")
    r = hub.audit.verify()
    return {"ok": r.ok, "entries": r.entries, "bad_seq": r.bad_seq, "problem": r.problem}
