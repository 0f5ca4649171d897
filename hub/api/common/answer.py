"""Shared by the endpoints that answer with rows: format choice, the `core` export rule,
and the streamed response with its headers."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pyarrow as pa
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from catalog.errors import AccessDenied
from catalog.lake.prefetch import prefetch
from hub.exchange.encoders import ENCODERS, MEDIA_TYPES
from hub.exchange.results import QueryResult

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


async def _pipelined(chunks: Iterator[bytes | memoryview]) -> AsyncIterator[bytes | memoryview]:
    """The encoded answer, made by a thread that stays up to two batches ahead of the
    socket: DuckDB converts the next batch while the event loop sends this one (a
    1,000,000-row answer: docs/performance.md).  If the client goes away the thread stops,
    closes the result (the audit entry says how far it got) and is waited for off the
    event loop."""
    ahead = prefetch(chunks, depth=2, name="blockhub-answer")
    try:
        while True:
            chunk = await run_in_threadpool(next, ahead, None)
            if chunk is None:
                return
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(ahead.close)


def respond(
    result: QueryResult, fmt: str, headers: dict[str, str] | None = None
) -> StreamingResponse:
    chunks = ENCODERS[fmt](result)
    # Every format is made a thread ahead of the socket (D32): DuckDB renders and exports
    # the next batch while the event loop sends this one.
    return StreamingResponse(
        _pipelined(chunks),
        media_type=MEDIA_TYPES[fmt],
        headers=_headers(result, fmt, headers),
    )


class _AuditedBody(Response):
    """A one-body answer whose audit entry is written once the body has been handed to
    the server — also when sending fails — rather than before the first byte (the
    append is a catalog write transaction, about a third of a point lookup's time)."""

    def __init__(self, result: QueryResult, body: bytes, fmt: str, headers: dict[str, str]):
        super().__init__(body, media_type=MEDIA_TYPES[fmt], headers=headers)
        self._result = result

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await run_in_threadpool(self._result.run_close_hook)


def encode_small(result: QueryResult, fmt: str) -> bytes | None:
    """The whole body of a small result (already read whole from the engine), or None
    for one that must stream.  Blocking: call it in a worker thread — the same call that
    ran the query, where it can (one thread hop less per answer)."""
    if not result.complete:
        return None
    result.defer_close_hook = True
    try:
        return b"".join(ENCODERS[fmt](result))
    except BaseException:
        result.run_close_hook()  # the failure is on record before the error answer
        raise


def finish(
    result: QueryResult, fmt: str, body: bytes | None, headers: dict[str, str] | None = None
) -> Response:
    """The response of a result whose small body :func:`encode_small` made (or None)."""
    if body is None:
        return respond(result, fmt, headers)
    return _AuditedBody(result, body, fmt, _headers(result, fmt, headers))


async def answer(result: QueryResult, fmt: str, headers: dict[str, str] | None = None) -> Response:
    """The response of a result: a small one is encoded in one worker-thread call and
    sent as one body, a larger one streams."""
    body = await run_in_threadpool(encode_small, result, fmt)
    return finish(result, fmt, body, headers)


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
