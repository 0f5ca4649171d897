"""SQL over the datasets the caller may read, streamed in the format asked for."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from catalog.errors import InvalidRequest
from hub.api.answer import action_of, encode_small, finish, guard_core, pick_format
from hub.api.deps import CredentialsDep, HubDep, authenticate, bearer_token
from hub.api.errors import error_responses
from hub.context import Hub
from hub.encoders import MEDIA_TYPES, ROW_SEPARATORS, Format
from hub.exchange import QueryResult

router = APIRouter(
    prefix="/v1", tags=["query"], responses=error_responses(400, 401, 403, 404, 408, 422)
)


class QueryRequest(BaseModel):
    sql: str = Field(
        description="one SELECT over dataset names",
        examples=["SELECT count(*) FROM hotline_tickets"],
    )
    versions: dict[str, int] = Field(
        default_factory=dict,
        description="dataset → version to read (time travel); latest by default",
    )
    format: Format | None = Field(
        default=None, description="json (default), ndjson, csv, arrow, parquet"
    )
    max_rows: int | None = Field(default=None, gt=0, description="cap on returned rows")


def _format(asked: str | None, accept: str | None) -> str:
    return pick_format(asked, accept)


def _parse_versions(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        name, _, number = item.partition("=")
        if not number.isdigit():
            raise InvalidRequest(f"version must look like dataset=3, not {item!r}", value=item)
        out[name] = int(number)
    return out


async def _answer(
    hub: Hub,
    credentials: HTTPAuthorizationCredentials | None,
    req: QueryRequest,
    accept: str | None,
) -> Response:
    fmt = _format(req.format, accept)
    s = hub.settings
    max_rows = min(req.max_rows or s.query_max_rows, s.query_max_rows)

    def run() -> tuple[QueryResult, bytes | None]:
        principal = authenticate(hub, credentials)
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

    result, body = await run_in_threadpool(run)
    return finish(result, fmt, body)


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
    credentials: CredentialsDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    return await _answer(hub, credentials, req, accept)


@router.get("/query", summary="Run SQL (query string)", responses=_RESPONSES)
async def query_get(
    hub: HubDep,
    credentials: CredentialsDep,
    sql: Annotated[str, Query(description="one SELECT over dataset names")],
    version: Annotated[list[str], Query(description="dataset=N, repeatable")] = [],  # noqa: B006
    format: Format | None = None,
    max_rows: Annotated[int | None, Query(gt=0)] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    bearer_token(credentials)  # a request without a token is a 401 before any 400
    req = QueryRequest(sql=sql, versions=_parse_versions(version), format=format, max_rows=max_rows)
    return await _answer(hub, credentials, req, accept)
