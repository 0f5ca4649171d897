"""The websocket dispatch endpoint ``/v1/ws`` (protocol: docs/websocket.md).

A connection authenticates (``Authorization`` header, or an ``auth`` op as its
first message, since browsers cannot set headers), then subscribes to channels,
each optionally from an offset to replay what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from websockets.protocol import State

from catalog.domain.channels import ALERTS, dataset_channel, feed_channel, orders_channel
from catalog.errors import (
    AccessDenied,
    HubError,
    InvalidRequest,
    ServiceUnavailable,
    Unauthenticated,
    unavailable,
)
from catalog.identity.store import Principal
from eventlog.message import Message
from hub.api.block_channels import block_op, close_block_channels, is_block_op
from hub.api.common.errors import error_message, hub_error_message
from hub.api.common.limits import MAX_INT, NUL_MESSAGE
from hub.api.wsproto import DirectWebSocketProtocol, serving_protocol
from hub.assembly.context import Hub
from hub.live import alerts, dispatch
from hub.live.auditing import audit_subscription
from hub.live.channels import (
    audit_unmasked,
    check_channel,
    disclose_alert,
    disclose_message,
    disclose_order,
    parse_filter,
    subscription_filter,
)
from hub.live.frames import ws_text_frame
from hub.live.ops import OpsRuntime
from hub.live.presence import CLOSE_TOO_MANY, Connection, TooManyConnections
from hub.live.subscription import Notice, SlowConsumer, Subscription

log = logging.getLogger(__name__)
router = APIRouter()

AUTH_TIMEOUT_S = 10.0
CLOSE_AUTH = 4401
CLOSE_SLOW = 4008
CLOSE_PROTOCOL = 4400
CLOSE_TRY_AGAIN = 1013  # RFC 6455 "try again later": a server the hub needs is down
__all__ = ["CLOSE_AUTH", "CLOSE_SLOW", "CLOSE_TOO_MANY", "check_channel", "router"]

ORDER_OPS = {
    "order.ack": "acknowledge",
    "order.progress": "progress",
    "order.close": "close",
}


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def _error(err: HubError, **extra: Any) -> str:
    return _dumps(hub_error_message(err, **extra))


async def _authenticate(ws: WebSocket, hub: Hub) -> Principal:
    header = ws.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return await asyncio.to_thread(hub.store.identity.authenticate, header[7:].strip())
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
    return await asyncio.to_thread(hub.store.identity.authenticate, msg["token"])


async def _subscribe(
    ws: WebSocket, hub: Hub, principal: Principal, conn: Connection, msg: dict[str, Any]
) -> None:
    channel = msg["channel"]
    flt = parse_filter(channel, msg.get("filter"))
    try:
        admission = await asyncio.to_thread(check_channel, hub, principal, channel)
        keep = await asyncio.to_thread(subscription_filter, hub, principal, channel, admission, flt)
    except AccessDenied:  # an attempt on someone else's data is on record too
        try:
            await asyncio.to_thread(
                audit_subscription, hub, principal, channel, msg.get("since"), outcome="denied"
            )
        except Exception:  # the caller still learns it was refused
            log.exception("audit entry of a refused subscription to %s failed", channel)
        raise
    since = msg.get("since")
    if since is not None and (
        not isinstance(since, int) or isinstance(since, bool) or abs(since) > MAX_INT
    ):
        raise InvalidRequest(
            f"since must be an integer offset (at most {MAX_INT})", channel=channel
        )
    if since is not None and msg.get("epoch") not in (None, hub.bus.epoch):
        await ws.send_text(
            _dumps(
                {
                    "type": "epoch_changed",
                    "channel": channel,
                    "epoch": hub.bus.epoch,
                    "requested_epoch": msg.get("epoch"),
                }
            )
        )
        since = 0
    head = await conn.sub.add(channel, since, keep)
    conn.channels.add(channel)
    await ws.send_text(
        _dumps({"type": "subscribed", "channel": channel, "head": head, "epoch": hub.bus.epoch})
    )
    # After the reply: the audit write must not delay the start of the replay.
    await asyncio.to_thread(audit_subscription, hub, principal, channel, since, admission.record)
    if admission.record is not None and admission.access is not None:
        await asyncio.to_thread(
            audit_unmasked, hub, principal, admission.record, admission.access, channel
        )


async def _order_op(
    ws: WebSocket, hub: Hub, principal: Principal, op: str, msg: dict[str, Any]
) -> None:
    order_id = _id_of(msg, "order", op)
    note = msg.get("note")
    data = msg.get("data")
    if (note is not None and not isinstance(note, str)) or (
        data is not None and not isinstance(data, dict)
    ):
        raise InvalidRequest("note must be a string and data an object", op=op)
    order = await asyncio.to_thread(
        dispatch.act, hub, principal, order_id, ORDER_OPS[op], note, data
    )
    await _ok(ws, op, msg, order=disclose_order(hub, principal, order.to_dict()))


async def _alert_op(
    ws: WebSocket, hub: Hub, principal: Principal, op: str, msg: dict[str, Any]
) -> None:
    alert_id = _id_of(msg, "alert", op)
    note = msg.get("note") if isinstance(msg.get("note"), str) else None
    fn = alerts.acknowledge if op == "alert.ack" else alerts.resolve
    alert = await asyncio.to_thread(fn, hub, principal, alert_id, note)
    await _ok(ws, op, msg, alert=disclose_alert(hub, principal, alert.to_dict()))


def _id_of(msg: dict[str, Any], key: str, op: str) -> str:
    """The id of the order or alert a command names (``{"order": "..."}``)."""
    value = msg.get(key)
    if not isinstance(value, str):
        raise InvalidRequest(f"{op} needs an {key} id", op=op)
    return value


async def _ok(ws: WebSocket, op: str, msg: dict[str, Any], **shown: Any) -> None:
    """The answer to a command: ``ok``, the op, the client's id, what it changed as shown."""
    await ws.send_text(_dumps({"type": "ok", "op": op, "id": msg.get("id"), **shown}))


async def _commands(ws: WebSocket, hub: Hub, principal: Principal, conn: Connection) -> None:
    while True:
        raw = await ws.receive_text()
        try:
            msg = orjson.loads(raw)
            if not isinstance(msg, dict):
                raise ValueError
        except ValueError:
            await ws.send_text(_error(InvalidRequest("messages must be JSON objects")))
            continue
        if "\x00" in raw or "\\u0000" in raw:  # as over HTTP (hub.api.common.limits)
            await ws.send_text(_error(InvalidRequest(NUL_MESSAGE)))
            continue
        op = msg.get("op")
        op = op if isinstance(op, str) else None  # a list or an object is no op name
        channel = msg.get("channel")
        try:
            if op == "ping":
                await ws.send_text(_dumps({"type": "pong", "id": msg.get("id")}))
            elif is_block_op(op, channel):  # block:<code> channels (hub/api/block_channels.py)
                await block_op(ws, hub, principal, msg)
            elif op == "subscribe" and isinstance(channel, str):
                await _subscribe(ws, hub, principal, conn, msg)
            elif op == "unsubscribe" and isinstance(channel, str):
                conn.sub.remove(channel)
                conn.channels.discard(channel)
                await ws.send_text(_dumps({"type": "unsubscribed", "channel": channel}))
            elif op in ORDER_OPS:
                await _order_op(ws, hub, principal, op, msg)
            elif op in ("alert.ack", "alert.resolve"):
                await _alert_op(ws, hub, principal, op, msg)
            else:
                raise InvalidRequest(
                    "unknown op; use subscribe, unsubscribe, ping, order.ack, order.progress, "
                    "order.close, alert.ack or alert.resolve (with their fields)",
                    op=str(op),
                )
        except HubError as e:
            await ws.send_text(_error(e, channel=channel) if channel else _error(e))
        except (WebSocketDisconnect, asyncio.CancelledError):
            raise
        except Exception as e:
            err = unavailable(e)
            if err is not None:  # a server the hub needs is down: say so, keep the socket
                log.warning("websocket %s: %s unavailable: %s", op, err.service, e)
                await ws.send_text(_error(err, channel=channel) if channel else _error(err))
                continue
            # A bug: the answer over HTTP would be a 500; the link stays up.
            log.exception("websocket op %r failed", op)
            await ws.send_text(_dumps(error_message(500, "internal_error", "internal error")))


def _frame(hub: Hub, principal: Principal, item: Message | Notice) -> bytes:
    if isinstance(item, Notice):
        return orjson.dumps(item.to_wire(), default=str)
    shown = disclose_message(hub, principal, item)
    if shown is item.data:
        return item.wire_bytes  # serialized once per message, shared by every subscriber
    if shown is None:  # access narrowed after the subscription's filter let it through
        return orjson.dumps({**item.to_wire(), "data": None, "withheld": True}, default=str)
    return orjson.dumps({**item.to_wire(), "data": shown}, default=str)


class _SameMessage:
    """Answers of :func:`_unmasked` for the messages being fanned out, per principal.

    A message goes to its subscribers in one pass of the event loop, and they are mostly
    a few principals on many connections: the access check and the column comparison run
    once per principal instead of once per connection.  A backlog of several messages is
    written to each connection in turn, so the answers of the last few messages are kept
    (keyed on the message objects, held, so they cannot be confused with later ones);
    keeping only the last one made every connection of a backlog recompute them all.
    """

    KEEP = 64

    def __init__(self) -> None:
        # id(message) -> (the message, held so that its id is not reused; its answers)
        self.answers: dict[int, tuple[Message, dict[str, bool]]] = {}

    def unmasked(self, hub: Hub, principal: Principal, msg: Message) -> bool:
        entry = self.answers.get(id(msg))
        if entry is None or entry[0] is not msg:
            if len(self.answers) >= self.KEEP:
                self.answers.clear()
            entry = self.answers[id(msg)] = (msg, {})
        per_message = entry[1]
        answer = per_message.get(principal.id)
        if answer is None:
            answer = disclose_message(hub, principal, msg) is msg.data
            per_message[principal.id] = answer
        return answer


_same_message = _SameMessage()
_DISCLOSED = (feed_channel(""), dataset_channel(""), ALERTS, orders_channel(""))
"""Channels whose messages carry dataset values or counts (:func:`disclose_message`)."""


def _unmasked(hub: Hub, principal: Principal, msg: Message) -> bool:
    """True when this principal gets the message exactly as published."""
    if not msg.channel.startswith(_DISCLOSED):
        return True
    return _same_message.unmasked(hub, principal, msg)


class RawSend:
    """ASGI middleware: keeps the server's own ``send`` for websocket scopes, so the
    delivery path can write frames synchronously (see :class:`_Direct`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope["blockhub.raw_send"] = send
        await self.app(scope, receive, send)


class _Direct:
    """Synchronous frame writers on uvicorn's sans-I/O websocket protocol: the same two
    calls its ``send`` makes, without the ASGI hops and task switch per message — the
    way ``websockets.broadcast`` writes.  :meth:`write` frames items for this principal;
    :meth:`attach` lets the fan-out write frames built once for every subscriber straight
    to the transport (see ``hub.live.bus``)."""

    def __init__(
        self, proto: DirectWebSocketProtocol, hub: Hub, principal: Principal, limit: int
    ) -> None:
        self.conn, self.transport, self.proto = proto.conn, proto.transport, proto
        self.hub, self.principal, self.limit = hub, principal, limit

    @classmethod
    def of(cls, ws: WebSocket, hub: Hub, principal: Principal, limit: int) -> _Direct | None:
        """The writer for this connection, or None when another server serves it (the
        queue + task path is used then)."""
        proto = serving_protocol(ws.scope.get("blockhub.raw_send"))
        if proto is None:
            return None
        return cls(proto, hub, principal, limit)

    def _closing(self) -> bool:
        return bool(
            self.proto.close_sent
            or self.transport.is_closing()
            or self.conn.state is not State.OPEN
        )

    def _frame(self, item: Message | Notice) -> bytes:
        if isinstance(item, Notice):
            return item.ws_frame  # one frame for every connection
        if _unmasked(self.hub, self.principal, item):
            return item.framed(ws_text_frame)  # one frame for every subscriber
        return ws_text_frame(_frame(self.hub, self.principal, item))

    def write(self, items: Sequence[Message | Notice]) -> bool:
        """Frame and write ``items``; False once the socket holds more than the limit."""
        if self._closing():
            return True  # closing: the receive side reports the disconnect
        transport = self.transport
        if self.conn.extensions:  # e.g. permessage-deflate: let the protocol encode
            for item in items:
                self.conn.send_text(_frame(self.hub, self.principal, item))
            transport.write(b"".join(self.conn.data_to_send()))
        elif len(items) == 1:
            transport.write(self._frame(items[0]))
        else:  # a backlog: one socket write for all of it
            transport.write(b"".join([self._frame(item) for item in items]))
        return bool(transport.get_write_buffer_size() <= self.limit)

    def verbatim(self, msgs: Sequence[Message]) -> bool:
        """Whether every one of ``msgs`` goes to this principal exactly as published."""
        return all(_unmasked(self.hub, self.principal, m) for m in msgs)

    def attach(self, sub: Subscription) -> None:
        sub.sink = self.write
        if self.conn.extensions:  # frames must be encoded per connection
            return
        transport, proto = self.transport, self.proto
        # The fan-out writes shared frames with the transport's own ``write``, no check of
        # its own per write: a reader that lets more than the limit pile up is found by the
        # transport's flow control, which calls ``pause_writing`` as the write that crosses
        # the limit returns; uvicorn's own handler (which holds its sends back) still runs.
        transport.set_write_buffer_limits(high=self.limit)
        proto.on_pause_writing = sub.too_slow
        # Nothing more once the transport closes: uvicorn closes it in the same call that
        # answers a client's close, fails the connection or shuts down; the one close it
        # sends and keeps open for the handshake (``close_sent``) is this endpoint's own,
        # made only after the subscription was found too slow (or before it existed).
        sub.write_frames(transport.write, transport.is_closing, self.verbatim, self.principal.id)


def _pressure(ws: WebSocket, limit: int) -> Callable[[], bool] | None:
    """Whether the socket holds more than ``limit`` unsent bytes (uvicorn's protocols)."""
    proto: Any = getattr(ws.scope.get("blockhub.raw_send"), "__self__", None)
    transport = getattr(proto, "transport", None)
    if transport is None or not hasattr(transport, "get_write_buffer_size"):
        return None
    return lambda: bool(transport.get_write_buffer_size() > limit)


async def _deliver(
    ws: WebSocket,
    hub: Hub,
    principal: Principal,
    sub: Subscription,
    writer: Callable[[Sequence[Message | Notice]], bool] | None,
) -> None:
    send = ws.send
    while True:
        first = await sub.get()
        items = (first, *sub.get_ready())
        if writer is not None:
            if not writer(items):
                raise SlowConsumer()
        else:
            for item in items:
                await send(
                    {"type": "websocket.send", "text": _frame(hub, principal, item).decode()}
                )


@router.websocket("/v1/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    ops: OpsRuntime = ws.app.state.ops
    await ws.accept()
    try:
        if not hub.bus.ready:  # started while the event log was down: no epoch to give yet
            raise ServiceUnavailable("event log")
        principal = await _authenticate(ws, hub)
    except HubError as e:
        await ws.send_text(_error(e))
        await ws.close(CLOSE_TRY_AGAIN if e.status == 503 else CLOSE_AUTH, e.message[:120])
        return
    except WebSocketDisconnect:
        return
    except Exception as e:  # the catalog is down: try again later, not "bad token"
        err = unavailable(e)
        if err is None:
            raise
        log.warning("websocket authentication: %s unavailable: %s", err.service, e)
        await ws.send_text(_error(err))
        await ws.close(CLOSE_TRY_AGAIN, err.message[:120])
        return
    sub = hub.bus.subscription()
    client = ws.client
    try:
        conn = await ops.presence.join(
            principal, sub, f"{client.host}:{client.port}" if client else None
        )
    except TooManyConnections as e:
        await ws.send_text(_error(e))
        await ws.close(CLOSE_TOO_MANY, e.message[:120])
        return
    tasks: list[asyncio.Task[Any]] = []
    try:
        await ws.send_text(
            _dumps(
                {
                    "type": "welcome",
                    "principal": principal.id,
                    "agency": principal.agency_id,
                    "role": principal.role,
                    "epoch": hub.bus.epoch,
                    "connection": conn.id,
                    "heartbeat_s": ops.presence.heartbeat_s,
                    "replica": hub.settings.replica,
                }
            )
        )
        direct = (
            _Direct.of(ws, hub, principal, hub.settings.ws_send_buffer_bytes)
            if hub.settings.ws_direct_write
            else None
        )
        writer = None
        if direct is not None:
            direct.attach(sub)
            writer = direct.write
        sub.pressure = _pressure(ws, hub.settings.ws_send_buffer_bytes // 2)
        overflow = asyncio.create_task(sub.overflow.wait())
        tasks = [
            asyncio.create_task(_commands(ws, hub, principal, conn)),
            asyncio.create_task(_deliver(ws, hub, principal, sub, writer)),
            overflow,
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            exc = None if t is overflow else t.exception()
            if t is overflow or isinstance(exc, SlowConsumer):
                # The sender may be stuck on a full socket: stop it, then close; the close
                # frame waits behind what the client has not read yet (bounded, as pings).
                tasks[1].cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        ws.close(CLOSE_SLOW, "slow consumer: send queue overflowed"), 20
                    )
            elif exc is not None and not isinstance(exc, WebSocketDisconnect):
                log.warning("websocket closed on error: %r", exc)
    except WebSocketDisconnect:
        pass
    finally:
        for t in tasks:
            t.cancel()
        sub.close()
        close_block_channels(ws)
        await ops.presence.leave(conn)
