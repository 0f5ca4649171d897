"""Shared by the endpoints that answer with rows: format choice, the `core` export rule,
and the streamed response with its headers."""

from __future__ import annotations

import dataclasses
from typing import Any

import pyarrow as pa
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from catalog.errors import AccessDenied
from hub.encoders import ENCODERS, MEDIA_TYPES
from hub.exchange import QueryResult

_ACCEPT = {v.split(";")[0]: k for k, v in MEDIA_TYPES.items()}

BULK_FORMATS = frozenset({"csv", "arrow", "parquet"})
"""Export formats: a file a consumer keeps.  A `core` result never leaves in them."""


def pick_format(asked: str | None, accept: str | None) -> str:
    if asked:
        return asked
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip()
        if media in _ACCEPT:
            return _ACCEPT[media]
    return "json"


def action_of(fmt: str, default: str = "query") -> str:
    """The audit action of an answer: an export when it leaves as a file format."""
    return "export" if fmt in BULK_FORMATS else default


def guard_core(result: QueryResult, fmt: str, core_max_rows: int) -> None:
    """Core data (核心数据) is never exported in bulk: refuse export formats, and cap a
    JSON answer at ``core_max_rows`` rows (it says ``truncated``)."""
    if result.classification != "core":
        return
    if fmt in BULK_FORMATS:
        result.outcome = "denied"
        result.close()
        raise AccessDenied(
            f"the result is core data (核心数据) and cannot be exported as {fmt}; "
            f"ask for JSON (at most {core_max_rows} rows)",
            classification="core",
            format=fmt,
        )
    result.max_rows = min(result.max_rows, core_max_rows)


def _headers(result: QueryResult, fmt: str, headers: dict[str, str] | None) -> dict[str, str]:
    out = {
        "X-Blockhub-Versions": ",".join(f"{k}={v}" for k, v in result.versions.items()),
        "X-Blockhub-Classification": result.classification,
        **(headers or {}),
    }
    if fmt == "parquet":
        out["Content-Disposition"] = 'attachment; filename="result.parquet"'
    return out


def respond(
    result: QueryResult, fmt: str, headers: dict[str, str] | None = None
) -> StreamingResponse:
    return StreamingResponse(
        ENCODERS[fmt](result), media_type=MEDIA_TYPES[fmt], headers=_headers(result, fmt, headers)
    )


async def answer(result: QueryResult, fmt: str, headers: dict[str, str] | None = None) -> Response:
    """The response of a result: a small one (already read whole from the engine) is
    encoded in one worker-thread call and sent as one body, a larger one streams."""
    if not result.complete:
        return respond(result, fmt, headers)
    body = await run_in_threadpool(lambda: b"".join(ENCODERS[fmt](result)))
    return Response(body, media_type=MEDIA_TYPES[fmt], headers=_headers(result, fmt, headers))


def replay(result: QueryResult, table: pa.Table, extra: dict[str, Any]) -> QueryResult:
    """A finished result served again from ``table`` (a materialised page)."""
    return dataclasses.replace(
        result,
        schema=table.schema,
        _reader=iter(table.to_batches()),
        row_count=0,
        finished=None,
        on_close=None,
        complete=True,
        rendered=None,
        extra={**result.extra, **extra},
    )


def stream_doc(description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {m: {} for m in MEDIA_TYPES.values()}}}
