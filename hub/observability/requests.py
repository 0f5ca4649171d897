"""ASGI middleware at the edge of the app: a request id for every request, its metrics and
its access-log line.

The id is the caller's ``X-Request-ID`` when it looks like an id (``catalog.requestid``:
letters, digits and ``._:-``, at most 128), else a new one; it is answered in
``X-Request-ID``, put on every log line of the request and into the audit entries and
events the request causes (``catalog.requestid``).  A websocket connection gets one too
(the upgrade request's), carried into its subscription entries and presence events.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catalog import requestid
from hub.observability import metrics

access_log = logging.getLogger("blockhub.access")

HEADER = "X-Request-ID"


def incoming_id(scope: Scope) -> str:
    """The caller's request id when it is acceptable, else a new one."""
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if requestid.VALID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


def route_of(scope: Scope) -> str:
    """The route template that answered (``/v1/datasets/{dataset_id}``), never the path: a
    label per path would let callers make labels without end."""
    route: Any = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(template, str):
        return template
    path = str(scope.get("path", ""))
    if path == "/dashboard" or path.startswith("/dashboard/"):
        return "/dashboard"
    return "unmatched"


class RequestObserver:
    """Outermost middleware: sees every answer, the limit checks' refusals included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = incoming_id(scope)
        token = requestid.set_id(rid)
        try:
            if scope["type"] == "websocket":
                # The server's own send must reach the websocket route (hub.api.ws.RawSend).
                await self.app(scope, receive, send)
                return
            await self._http(scope, receive, send, rid)
        finally:
            requestid.reset(token)

    async def _http(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message).append(HEADER, rid)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route, method = route_of(scope), str(scope.get("method", ""))
            metrics.observe_request(method, route, status, seconds)
            access_log.info(
                "%s %s %d %.1f ms",
                method,
                scope.get("path", ""),  # no query string: it may hold SQL
                status,
                seconds * 1000,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
