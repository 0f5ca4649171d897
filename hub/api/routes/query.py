"""SQL over the datasets the caller may read, streamed in the format asked for."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from catalog.errors import InvalidRequest
from hub.api.common.answer import (
    BULK_FORMATS,
    action_of,
    encode_small,
    finish,
    guard_core,
    pick_format,
)
from hub.api.common.deps import CredentialsDep, HubDep, LimiterDep, authenticate, bearer_token
from hub.api.common.errors import error_responses
from hub.api.common.limits import MAX_INT, MAX_INT32, Held, Limiter, Positive, Slot, VersionNumber
from hub.assembly.context import Hub
from hub.exchange.encoders import MEDIA_TYPES, ROW_SEPARATORS, Format
from hub.exchange.results import QueryResult

router = APIRouter(
    prefix="/v1", tags=["query"], responses=error_responses(400, 401, 403, 404, 408, 422, 429)
)

MAX_VERSIONS = 64
"""Datasets one query may pin to a version."""
DatasetName = Annotated[str, Field(min_length=1, max_length=200)]


class QueryRequest(BaseModel):
    sql: str = Field(
        description="one SELECT over dataset names",
        examples=["SELECT count(*) FROM hotline_tickets"],
    )
    versions: dict[DatasetName, VersionNumber] = Field(
        default_factory=dict,
        max_length=MAX_VERSIONS,
        description="dataset → version to read (time travel); latest by default",
    )
    format: Format | None = Field(
        default=None, description="json (default), ndjson, csv, arrow, parquet"
    )
    max_rows: Positive | None = Field(default=None, description="cap on returned rows")


def _format(asked: str | None, accept: str | None) -> str:
    return pick_format(asked, accept)


_VERSION_ITEM = re.compile(r"([^=]{1,200})=([0-9]{1,10})")


def _parse_versions(items: list[str]) -> dict[str, int]:
    if len(items) > MAX_VERSIONS:
        raise InvalidRequest(f"at most {MAX_VERSIONS} versions", field="version")
    out: dict[str, int] = {}
    for item in items:
        m = _VERSION_ITEM.fullmatch(item)
        if m is None or not 0 < int(m.group(2)) <= MAX_INT32:
            raise InvalidRequest(
                f"version must look like dataset=3 (1..{MAX_INT32}), not {item[:100]!r}",
                field="version",
                value=item[:100],
            )
        out[m.group(1)] = int(m.group(2))
    return out


async def _answer(
    hub: Hub,
    limiter: Limiter,
    credentials: HTTPAuthorizationCredentials | None,
    req: QueryRequest,
    accept: str | None,
) -> Response:
    fmt = _format(req.format, accept)
    s = hub.settings
    max_rows = min(req.max_rows or s.query_max_rows, s.query_max_rows)
    slot: Slot | None = None

    def run() -> tuple[QueryResult, bytes | None]:
        nonlocal slot
        principal = authenticate(hub, credentials)
        slot = limiter.admit(principal.id, "export" if fmt in BULK_FORMATS else "query")
        result = hub.exchange.query(
            req.sql,
            principal,
            versions=req.versions,
            max_rows=max_rows,
            timeout_s=s.query_timeout_s,
            action=action_of(fmt),
            detail={"format": fmt},
            render_json=ROW_SEPARATORS.get(fmt),
        )
        guard_core(result, fmt, s.core_max_rows)
        return result, encode_small(result, fmt)

    try:
        result, body = await run_in_threadpool(run)
        response = finish(result, fmt, body)
    except BaseException:
        if slot is not None:
            slot.release()
        raise
    assert slot is not None
    return Held(response, slot)


_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "Rows, streamed. JSON: `{ok, columns, rows, row_count, truncated, query_ms, "
        "versions, classification}`; other formats carry versions in `X-Blockhub-Versions`.",
        "content": {m: {} for m in MEDIA_TYPES.values()},
    }
}


@router.post("/query", summary="Run SQL (body)", responses=_RESPONSES)
async def query_post(
    req: QueryRequest,
    hub: HubDep,
    limiter: LimiterDep,
    credentials: CredentialsDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    return await _answer(hub, limiter, credentials, req, accept)


@router.get("/query", summary="Run SQL (query string)", responses=_RESPONSES)
async def query_get(
    hub: HubDep,
    limiter: LimiterDep,
    credentials: CredentialsDep,
    sql: Annotated[str, Query(description="one SELECT over dataset names")],
    version: Annotated[list[str], Query(description="dataset=N, repeatable")] = [],  # noqa: B006
    format: Format | None = None,
    max_rows: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    bearer_token(credentials)  # a request without a token is a 401 before any 400
    req = QueryRequest(sql=sql, versions=_parse_versions(version), format=format, max_rows=max_rows)
    return await _answer(hub, limiter, credentials, req, accept)
