"""Block answers: everything the caller may read about one region or one enterprise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool

from catalog.identity.store import Principal
from hub.api.common.deps import HubDep, LimiterDep, PrincipalDep
from hub.api.common.errors import error_responses
from hub.api.common.limits import Limiter
from hub.assembly.context import Hub
from hub.exchange.blocks import Blocks

router = APIRouter(
    prefix="/v1/blocks",
    tags=["blocks"],
    responses=error_responses(400, 401, 403, 404, 408, 422, 429),
)


async def _answer(
    hub: Hub, principal: Principal, limiter: Limiter, ask: Callable[[Blocks], dict[str, Any]]
) -> dict[str, Any]:
    """A block answer under the caller's query limit (a block answer runs SQL like a query)."""
    blocks = Blocks(hub.exchange, timeout_s=hub.settings.query_timeout_s)
    slot = limiter.admit(principal.id, "query")
    try:
        answer = await run_in_threadpool(ask, blocks)
    finally:
        slot.release()
    return {"ok": True, **answer}


@router.get(
    "/region/{code}",
    summary="Summary of a region block (GB/T 2260 code at any level) across readable datasets",
)
async def region_block(
    hub: HubDep,
    principal: PrincipalDep,
    limiter: LimiterDep,
    code: Annotated[str, Path(description="6- or 12-digit region code, e.g. 520102")],
    children: Annotated[
        bool, Query(description="also break every dataset down by child region")
    ] = False,
) -> dict[str, Any]:
    return await _answer(
        hub, principal, limiter, lambda b: b.region(code, principal, with_children=children)
    )


@router.get(
    "/region/{code}/children",
    summary="The region block with its drill-down to child regions (same as ?children=true)",
)
async def region_block_children(
    hub: HubDep,
    principal: PrincipalDep,
    limiter: LimiterDep,
    code: Annotated[str, Path(description="6- or 12-digit region code")],
) -> dict[str, Any]:
    return await region_block(hub, principal, limiter, code, children=True)


@router.get(
    "/enterprise/{credit_code}",
    summary="Summary of an enterprise block (unified social credit code) across readable datasets",
)
async def enterprise_block(
    hub: HubDep,
    principal: PrincipalDep,
    limiter: LimiterDep,
    credit_code: Annotated[str, Path(description="18-character unified social credit code")],
) -> dict[str, Any]:
    return await _answer(hub, principal, limiter, lambda b: b.enterprise(credit_code, principal))
