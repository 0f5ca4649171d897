"""Rows of one dataset (filters, sort, cursor pages) and a masked sample — both read
through the exchange, so the caller's masks, columns and row filters apply."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from catalog.access import disclosure
from catalog.errors import AccessDenied, InvalidRequest
from catalog.identity.store import Principal
from catalog.sqltext import quote_ident
from hub.api.common.answer import (
    BULK_FORMATS,
    action_of,
    answer,
    guard_core,
    pick_format,
    replay,
    stream_doc,
)
from hub.api.common.deps import HubDep, LimiterDep, PrincipalDep
from hub.api.common.errors import error_responses
from hub.api.common.limits import MAX_INT32, Held
from hub.assembly.context import Hub
from hub.exchange.encoders import Format
from hub.exchange.rows import MAX_PAGE, Cursor, Filter, RowsQuery, parse_sort

router = APIRouter(
    prefix="/v1/datasets",
    tags=["exchange"],
    responses=error_responses(400, 401, 403, 404, 408, 422, 429),
)

_ROWS_DOC = stream_doc(
    "One page of rows, in the format asked for. JSON: `{ok, columns, rows, row_count, "
    "truncated, query_ms, versions, classification, next_cursor}`; every format carries the "
    "next page's cursor in `X-Blockhub-Next-Cursor` (absent on the last page)."
)


@router.get(
    "/{dataset_id}/rows", summary="Rows with filters, sort and cursor pages", responses=_ROWS_DOC
)
async def get_rows(
    dataset_id: str,
    hub: HubDep,
    principal: PrincipalDep,
    limiter: LimiterDep,
    filter: Annotated[
        list[str],
        Query(description="column:op:value, op one of eq ne lt lte gt gte in (in: a,b,c)"),
    ] = [],  # noqa: B006
    sort: Annotated[str | None, Query(description="columns, `-` for descending")] = None,
    columns: Annotated[str | None, Query(description="comma-separated columns")] = None,
    limit: Annotated[int, Query(gt=0, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    version: Annotated[int | None, Query(ge=1, le=MAX_INT32, description="time travel")] = None,
    format: Format | None = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    fmt = pick_format(format, accept)
    slot = limiter.admit(principal.id, "export" if fmt in BULK_FORMATS else "query")
    try:
        response = await _rows(
            dataset_id, hub, principal, filter, sort, columns, limit, cursor, version, fmt
        )
    except BaseException:
        slot.release()
        raise
    return Held(response, slot)


async def _rows(
    dataset_id: str,
    hub: Hub,
    principal: Principal,
    filter: list[str],
    sort: str | None,
    columns: str | None,
    limit: int,
    cursor: str | None,
    version: int | None,
    fmt: str,
) -> Response:
    access = await run_in_threadpool(hub.exchange.access, principal, dataset_id)
    if not access.readable:
        err = AccessDenied(f"you may not read dataset {dataset_id!r}", dataset=dataset_id)
        await run_in_threadpool(
            hub.exchange.audit_refusal, f"rows:{dataset_id}", principal, "rows", None, err
        )
        raise err
    record = hub.store.get_dataset(dataset_id)
    pk = list(record.manifest.primary_key)
    keyset_ok = bool(pk) and all(disclosure.shown_as_stored(access, c) for c in pk)
    rq = RowsQuery(
        dataset=dataset_id,
        visible=access.columns,
        primary_key=pk,
        keyset_ok=keyset_ok,
        filters=[Filter.parse(f) for f in filter],
        sort=parse_sort(sort),
        columns=[c.strip() for c in columns.split(",") if c.strip()] if columns else None,
        limit=limit,
    )
    cur = Cursor.decode(cursor) if cursor else None
    if cur is not None and version is not None and cur.version != version:
        raise InvalidRequest("cursor belongs to another version", field="cursor")
    pinned = cur.version if cur is not None else version
    sql = rq.sql(cur)
    s = hub.settings
    result = await run_in_threadpool(
        hub.exchange.query,
        sql,
        principal,
        versions={dataset_id: pinned} if pinned is not None else None,
        max_rows=limit,
        timeout_s=s.query_timeout_s,
        action=action_of(fmt, "rows"),
        detail={"format": fmt, "endpoint": "rows"},
    )
    guard_core(result, fmt, s.core_max_rows)
    table = await run_in_threadpool(result.to_table)
    next_cursor = None
    used_version = result.versions[dataset_id]
    if result.truncated and table.num_rows:
        if keyset_ok:
            last = table.slice(table.num_rows - 1, 1).to_pylist()[0]
            after = [last[k.column] for k in rq.order]
            next_cursor = Cursor(used_version, after=after).encode()
        else:
            offset = (cur.offset or 0) if cur is not None else 0
            next_cursor = Cursor(used_version, offset=offset + table.num_rows).encode()
    extra = rq.extra_columns()
    if extra:
        table = table.drop_columns(extra)
    page = replay(result, table, {"next_cursor": next_cursor})
    return await answer(page, fmt, {"X-Blockhub-Next-Cursor": next_cursor} if next_cursor else None)


@router.get(
    "/{dataset_id}/sample",
    summary="A sample of rows, masked as the caller's access requires",
    responses=stream_doc("Up to `n` rows as JSON (same shape as /v1/query)."),
)
async def get_sample(
    dataset_id: str,
    hub: HubDep,
    principal: PrincipalDep,
    limiter: LimiterDep,
    n: Annotated[int, Query(gt=0, le=100)] = 10,
) -> Response:
    quoted = quote_ident(dataset_id)
    slot = limiter.admit(principal.id, "query")
    try:
        result = await run_in_threadpool(
            hub.exchange.query,
            f"SELECT * FROM {quoted} LIMIT {n}",
            principal,
            max_rows=n,
            timeout_s=hub.settings.query_timeout_s,
            action="sample",
        )
        response = await answer(result, "json")
    except BaseException:
        slot.release()
        raise
    return Held(response, slot)
