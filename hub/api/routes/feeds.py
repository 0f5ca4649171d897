"""Live feeds over HTTP: push a batch of events (docs/api.md, docs/feeds.md)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from catalog.access.disclosure import WITHHELD, disclose_counts
from catalog.access.policy import can_manage, can_read
from catalog.errors import AccessDenied, Conflict
from hub.api.common.deps import HubDep, PrincipalDep
from hub.api.common.errors import error_responses
from hub.live.feeds import FeedRunner
from pipelines.feeds import (
    MAX_EVENTS_PER_BATCH,
    BatchTooLarge,
    EventsRejected,
    check_events,
    is_feed,
    parse_batch,
)

router = APIRouter(
    prefix="/v1/feeds", tags=["feeds"], responses=error_responses(400, 401, 403, 404, 409, 413, 422)
)

MAX_BODY_BYTES = 16 * 1024 * 1024


class PushAccepted(BaseModel):
    ok: bool = True
    feed: str
    accepted: int
    first_offset: int
    last_offset: int


class FeedStatus(BaseModel):
    feed: str
    connector: str
    running: bool
    accepted: int | None = None
    rejected: int | None = None
    committed_offset: int | None = None
    mqtt_connected: bool | None = None
    flush_worker_pid: int | None = Field(
        default=None,
        description="the process writing feeds to the lake (null: a thread of the server)",
    )
    lake_ready: bool | None = Field(
        default=None,
        description="the feed's lake table is made and loaded where flushes run (D37)",
    )
    replica: str | None = Field(default=None, description="the replica that answered")
    leader: bool | None = Field(
        default=None, description="this replica consumes the feed (holds its lease)"
    )
    leader_replica: str | None = Field(
        default=None, description="the replica that consumes the feed (null: none now)"
    )


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BatchTooLarge(f"a batch may hold at most {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BatchTooLarge(f"a batch may hold at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _runner(request: Request) -> FeedRunner:
    runner: FeedRunner = request.app.state.feeds
    return runner


@router.post(
    "/{feed_id}/events",
    status_code=202,
    response_model=PushAccepted,
    summary="Push a batch of events to a push feed (all or nothing)",
    responses={422: {"description": "invalid events: none of the batch was accepted"}},
)
async def push_events(
    feed_id: str, request: Request, hub: HubDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Body: a JSON array of event objects, one object, or NDJSON
    (`Content-Type: application/x-ndjson`).  Every event is checked against the feed's
    columns; if any is invalid the answer is 422 listing `index` and `reason` of each bad
    one, and nothing is accepted.  A 202 means every event is durably logged, on the
    `feed:<id>` channel already, and will be in the lake table after the next flush."""
    record = await asyncio.to_thread(hub.store.get_dataset, feed_id)
    manifest = record.manifest
    if not can_read(principal, record):
        raise AccessDenied(f"you may not push to {feed_id!r}", dataset=feed_id)
    if not is_feed(manifest):
        raise Conflict(f"dataset {feed_id!r} is not a feed", dataset=feed_id)
    if manifest.source.connector != "push":
        raise Conflict(
            f"feed {feed_id!r} takes its events from {manifest.source.connector}, not HTTP push",
            dataset=feed_id,
        )
    if not can_manage(principal, manifest.agency):
        raise AccessDenied(
            f"only a steward of {manifest.agency} or an admin may push to {feed_id!r}",
            dataset=feed_id,
        )
    events = parse_batch(await _body(request), request.headers.get("content-type", ""))
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise BatchTooLarge(
            f"a batch may hold at most {MAX_EVENTS_PER_BATCH} events, not {len(events)}",
            events=len(events),
        )
    checked = await asyncio.to_thread(check_events, manifest, events)
    if checked.errors:
        raise EventsRejected(
            f"{len(checked.errors)} of {len(events)} event(s) are invalid; none was accepted",
            received=len(events),
            rejected=[e.to_dict() for e in checked.errors],
        )
    runner = _runner(request)
    feed = await runner.ensure(manifest)
    first, last = await asyncio.to_thread(runner.append, feed, checked)
    return {
        "ok": True,
        "feed": feed_id,
        "accepted": len(checked.records),
        "first_offset": first,
        "last_offset": last,
    }


@router.get("/{feed_id}", response_model=FeedStatus, summary="A feed's intake and flush state")
async def feed_status(feed_id: str, request: Request, hub: HubDep, principal: PrincipalDep) -> Any:
    record, access = await asyncio.to_thread(hub.exchange.record_access, principal, feed_id)
    if not access.readable:
        raise AccessDenied(f"you may not read {feed_id!r}", dataset=feed_id)
    if not is_feed(record.manifest):
        raise Conflict(f"dataset {feed_id!r} is not a feed", dataset=feed_id)
    state = await asyncio.to_thread(_runner(request).status, feed_id)
    # Event counts are of every event: withheld from a reader whose grant filters rows.
    shown = disclose_counts(access, state, ("accepted", "rejected"))
    shown.pop(WITHHELD, None)
    return {"feed": feed_id, "connector": record.manifest.source.connector, **shown}
