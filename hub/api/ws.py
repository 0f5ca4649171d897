"""The websocket dispatch endpoint ``/v1/ws`` (protocol: docs/websocket.md).

A connection authenticates (``Authorization`` header, or an ``auth`` op as its
first message, since browsers cannot set headers), then subscribes to channels,
each optionally from an offset to replay what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from catalog.errors import AccessDenied, HubError, InvalidRequest, Unauthenticated
from catalog.store import Principal
from hub.api.block_channels import block_op, close_block_channels, is_block_op
from hub.api.errors import hub_error_body
from hub.auditing import audit_subscription
from hub.bus import Notice, SlowConsumer, Subscription
from hub.context import Hub
from pipelines.feeds import is_feed

log = logging.getLogger(__name__)
router = APIRouter()

AUTH_TIMEOUT_S = 10.0
CLOSE_AUTH = 4401
CLOSE_SLOW = 4008
CLOSE_PROTOCOL = 4400


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def _error(err: HubError, **extra: Any) -> str:
    return _dumps({"type": "error", **hub_error_body(err), **extra})


async def _authenticate(ws: WebSocket, hub: Hub) -> Principal:
    header = ws.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return await asyncio.to_thread(hub.store.authenticate, header[7:].strip())
    try:
        raw = await asyncio.wait_for(ws.receive_text(), AUTH_TIMEOUT_S)
    except TimeoutError:
        raise Unauthenticated("no auth message within 10 s") from None
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Unauthenticated('first message must be {"op": "auth", "token": ...}') from None
    if (
        not isinstance(msg, dict)
        or msg.get("op") != "auth"
        or not isinstance(msg.get("token"), str)
    ):
        raise Unauthenticated('first message must be {"op": "auth", "token": ...}')
    return await asyncio.to_thread(hub.store.authenticate, msg["token"])


def check_channel(hub: Hub, principal: Principal, channel: str) -> None:
    """Raise unless the principal may subscribe to ``channel``."""
    kind, _, name = channel.partition(":")
    if kind == "dataset" and name:
        if not hub.exchange.access(principal, name).readable:
            raise AccessDenied(f"you may not subscribe to {channel!r}", channel=channel)
        return
    if kind == "feed" and name:  # a feed's events: readable by whoever may read the feed
        record = hub.store.get_dataset(name)
        if not is_feed(record.manifest):
            raise InvalidRequest(f"dataset {name!r} is not a feed", channel=channel)
        if not hub.exchange.access(principal, name).readable:
            raise AccessDenied(f"you may not subscribe to {channel!r}", channel=channel)
        return
    raise InvalidRequest(
        f"unknown channel {channel!r}; channels look like dataset:<id>", channel=channel
    )


async def _commands(ws: WebSocket, hub: Hub, principal: Principal, sub: Subscription) -> None:
    while True:
        raw = await ws.receive_text()
        try:
            msg = orjson.loads(raw)
            if not isinstance(msg, dict):
                raise ValueError
        except ValueError:
            await ws.send_text(_error(InvalidRequest("messages must be JSON objects")))
            continue
        op = msg.get("op")
        channel = msg.get("channel")
        try:
            if op == "ping":
                await ws.send_text(_dumps({"type": "pong", "id": msg.get("id")}))
            elif is_block_op(op, channel):  # block:<code> channels (hub/api/block_channels.py)
                await block_op(ws, hub, principal, msg)
            elif op == "subscribe" and isinstance(channel, str):
                await asyncio.to_thread(check_channel, hub, principal, channel)
                since = msg.get("since")
                if since is not None and not isinstance(since, int):
                    raise InvalidRequest("since must be an integer offset", channel=channel)
                if since is not None and msg.get("epoch") not in (None, hub.log.epoch):
                    await ws.send_text(
                        _dumps(
                            {
                                "type": "epoch_changed",
                                "channel": channel,
                                "epoch": hub.log.epoch,
                                "requested_epoch": msg.get("epoch"),
                            }
                        )
                    )
                    since = 0
                head = await sub.add(channel, since)
                await ws.send_text(
                    _dumps(
                        {
                            "type": "subscribed",
                            "channel": channel,
                            "head": head,
                            "epoch": hub.log.epoch,
                        }
                    )
                )
                await asyncio.to_thread(audit_subscription, hub, principal, channel, since)
            elif op == "unsubscribe" and isinstance(channel, str):
                sub.remove(channel)
                await ws.send_text(_dumps({"type": "unsubscribed", "channel": channel}))
            else:
                raise InvalidRequest(
                    "unknown op; use subscribe, unsubscribe or ping (with a channel where needed)",
                    op=str(op),
                )
        except HubError as e:
            await ws.send_text(_error(e, channel=channel) if channel else _error(e))


async def _deliver(ws: WebSocket, sub: Subscription) -> None:
    async for item in sub:
        if isinstance(item, Notice):
            await ws.send_text(_dumps(item.to_wire()))
        else:
            await ws.send_text(_dumps(item.to_wire()))


@router.websocket("/v1/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    await ws.accept()
    try:
        principal = await _authenticate(ws, hub)
    except HubError as e:
        await ws.send_text(_error(e))
        await ws.close(CLOSE_AUTH, e.message[:120])
        return
    except WebSocketDisconnect:
        return
    await ws.send_text(
        _dumps(
            {
                "type": "welcome",
                "principal": principal.id,
                "agency": principal.agency_id,
                "epoch": hub.log.epoch,
            }
        )
    )
    sub = hub.bus.subscription()
    tasks = [
        asyncio.create_task(_commands(ws, hub, principal, sub)),
        asyncio.create_task(_deliver(ws, sub)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            exc = t.exception()
            if isinstance(exc, SlowConsumer):
                with contextlib.suppress(Exception):
                    await ws.close(CLOSE_SLOW, "slow consumer: send queue overflowed")
            elif exc is not None and not isinstance(exc, WebSocketDisconnect):
                log.warning("websocket closed on error: %r", exc)
    finally:
        for t in tasks:
            t.cancel()
        sub.close()
        close_block_channels(ws)
