"""Limits on what one request may carry and on how much one principal may ask at once.

Two layers, both answering with the one error body (``hub.api.common.errors``):

* :class:`RequestLimits`, an ASGI middleware in front of every route: the URL's length
  (414), the body's size (413) and a JSON body's well-formedness and nesting depth (400,
  with the position) are checked before any route, parser or validator sees the request
  — Python code that recurses over a client's document (the JSON decoder, pydantic, the
  response encoder) never meets one deeper than ``max_json_depth``, and no string with a
  lone surrogate (which no UTF-8 encoder downstream can write) gets in.
* :class:`Limiter`: per principal, how many query and export answers may be in flight at
  once and how many may start per second (a token bucket), plus a ceiling for the whole
  process; past either, 429 with ``Retry-After``.

Numbers a client sends are bounded where they are declared (pydantic ``ge``/``le``), with
the bounds below: a number stored in a 32-bit column (versions, audit sequence numbers)
fits in 31 bits, every other integer that reaches SQL or arithmetic in 53 bits, so adding
a page or a row to it cannot overflow a 64-bit column or DuckDB's BIGINT.
"""

from __future__ import annotations

import math
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, Field
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catalog.errors import HubError

MAX_INT = 2**53 - 1
"""The largest integer a client may send anywhere (JSON-safe; fits int64 with room)."""
MAX_INT32 = 2**31 - 1
"""The largest version or audit sequence number (INTEGER columns of the catalog)."""

Count = Annotated[int, Field(ge=0, le=MAX_INT)]
"""A non-negative integer from a client: an offset, a sequence number."""
Positive = Annotated[int, Field(ge=1, le=MAX_INT)]
"""A positive integer from a client: a row cap."""
VersionNumber = Annotated[int, Field(ge=1, le=MAX_INT32)]
"""A dataset version from a client."""

_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _moment(value: datetime) -> datetime:
    """An instant inside 1970..9000 (naive means UTC): every later conversion and
    subtraction stays inside ``datetime``'s range (0001..9999 fails near its ends)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        inside = _EARLIEST <= aware <= _LATEST
    except OverflowError:
        inside = False
    if not inside:
        raise ValueError("must be between 1970-01-01 and 9000-01-01 (UTC)")
    return value


Moment = Annotated[datetime, AfterValidator(_moment)]
"""A point in time from a client, bounded to a range every conversion survives."""


class TooManyRequests(HubError):
    """A principal (or the whole server) is past its query/export limit: retry later."""

    code = "too_many_requests"
    status = 429

    def __init__(self, message: str, *, retry_after_s: int, **detail: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **detail)
        self.retry_after_s = retry_after_s


# -- request size, URL length, JSON depth --------------------------------------------------


FEED_BATCH_PATH = re.compile(r"/v1/feeds/[^/]+/events")
"""The one route whose bodies may be larger than ``max_body_bytes``: feed batches."""


@dataclass(frozen=True)
class RequestBounds:
    max_body_bytes: int
    max_json_depth: int
    max_url_bytes: int
    feed_body_bytes: int

    def body_limit(self, path: str) -> int:
        if FEED_BATCH_PATH.fullmatch(path):
            return max(self.feed_body_bytes, self.max_body_bytes)
        return self.max_body_bytes


class BadJson(HubError):
    """A JSON request body that is not strict JSON (RFC 8259: no NaN, no lone
    surrogates, valid UTF-8), or nests deeper than the limit; ``detail`` says where."""

    code = "invalid_json"
    status = 400


def check_json(body: bytes, max_depth: int) -> None:
    """Raise :class:`BadJson` unless ``body`` is one strict JSON document nesting at most
    ``max_depth`` arrays/objects.

    orjson parses it (C, no Python recursion; it refuses nesting past 1024 itself); a
    document with more brackets than ``max_depth`` is then walked with an explicit stack.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        deep = "depth" in str(e)
        raise BadJson(
            f"the JSON body nests deeper than {max_depth} levels"
            if deep
            else f"the body is not JSON: {e.msg} at line {e.lineno}, column {e.colno}",
            position={"line": e.lineno, "column": e.colno, "offset": e.pos},
            max_depth=max_depth if deep else None,
        ) from None
    if not isinstance(doc, dict | list) or body.count(b"[") + body.count(b"{") <= max_depth:
        return
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise BadJson(
                f"the JSON body nests deeper than {max_depth} levels", max_depth=max_depth
            )
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))


NUL_MESSAGE = "NUL characters (U+0000) are not accepted in URLs or JSON strings"
"""No text a client sends may hold NUL: PostgreSQL (a catalog, an event log) cannot store
it, and DuckDB's SQL parser ends a statement at it."""


def _has_nul(query_string: bytes) -> bool:
    return b"\x00" in query_string or b"%00" in query_string


def _offset(body: bytes, pos: int) -> dict[str, int]:
    line = body.count(b"\n", 0, pos) + 1
    return {"line": line, "column": pos - (body.rfind(b"\n", 0, pos) + 1) + 1, "offset": pos}


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _error_response(status: int, code: str, message: str, detail: dict[str, Any]) -> Response:
    from hub.api.common.errors import error_body

    return Response(
        orjson.dumps(error_body(status, code, message, detail)),
        status_code=status,
        media_type="application/json",
        headers={"Connection": "close"} if status == 413 else None,
    )


class RequestLimits:
    """ASGI middleware: URL length, body size and JSON depth, checked before routing.

    The body of a request with one is read here (at most its limit, then the request is
    answered 413 without reading on) and handed to the app as one message."""

    def __init__(self, app: ASGIApp, bounds: Callable[[], RequestBounds]) -> None:
        self.app = app
        self.bounds = bounds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                b = self.bounds()
                if len(scope.get("raw_path") or b"") + len(scope["query_string"]) > b.max_url_bytes:
                    await send({"type": "websocket.close", "code": 1009})
                    return
            await self.app(scope, receive, send)
            return
        b = self.bounds()
        url = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
        if url > b.max_url_bytes:
            await _error_response(
                414,
                "uri_too_long",
                f"the URL is longer than {b.max_url_bytes} bytes; send long SQL with POST",
                {"max_url_bytes": b.max_url_bytes},
            )(scope, receive, send)
            return
        if "\x00" in scope["path"] or _has_nul(scope["query_string"]):
            await _error_response(400, "invalid_request", NUL_MESSAGE, {})(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = b.body_limit(scope["path"])
        declared = headers.get("content-length")
        too_large = _error_response(
            413,
            "too_large",
            f"the request body is larger than {limit} bytes",
            {"max_body_bytes": limit},
        )
        if declared is not None:
            if not declared.strip().isdigit():
                await _error_response(400, "bad_request", "Content-Length is not a number", {})(
                    scope, receive, send
                )
                return
            if int(declared) > limit:
                await too_large(scope, receive, send)
                return
        if declared is None and "chunked" not in headers.get("transfer-encoding", "").lower():
            await self.app(scope, receive, send)  # no body
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if (
            body
            and scope["method"] in ("POST", "PUT", "PATCH")
            and _is_json(headers.get("content-type", ""))
            and not FEED_BATCH_PATH.fullmatch(scope["path"])  # JSON or NDJSON: its own parser
        ):
            try:
                check_json(body, b.max_json_depth)
                if b"\\u0000" in body:
                    raise BadJson(NUL_MESSAGE, position=_offset(body, body.index(b"\\u0000")))
            except BadJson as e:
                await _error_response(400, e.code, e.message, e.detail)(scope, receive, send)
                return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay


# -- per-principal concurrency and rate ----------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """One kind of answer's limits per principal: in flight at once, sustained rate
    (answers per second) and burst (how many may start back to back)."""

    concurrency: int
    rate: float
    burst: int


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    inflight: int = 0


class Slot:
    """One admitted answer; :meth:`release` (idempotent) frees its place."""

    def __init__(self, limiter: Limiter, key: tuple[str, str]) -> None:
        self._limiter = limiter
        self._key: tuple[str, str] | None = key

    def release(self) -> None:
        key, self._key = self._key, None
        if key is not None:
            self._limiter._release(key)


class Limiter:
    """Per-principal admission of query and export answers (thread-safe: the query
    endpoints admit in the worker thread that authenticated the caller)."""

    MAX_TRACKED = 100_000
    """Principals kept in memory; idle ones with full buckets are dropped past this."""

    def __init__(
        self,
        budgets: dict[str, Budget],
        *,
        max_inflight: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budgets = budgets
        self.max_inflight = max_inflight
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._inflight = 0

    def inflight(self, principal_id: str | None = None, kind: str | None = None) -> int:
        with self._lock:
            if principal_id is None:
                return self._inflight
            return sum(
                b.inflight
                for (p, k), b in self._buckets.items()
                if p == principal_id and (kind is None or k == kind)
            )

    def admit(self, principal_id: str, kind: str) -> Slot:
        """A slot for one answer of ``kind``, or :class:`TooManyRequests`."""
        budget = self.budgets[kind]
        key = (principal_id, kind)
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.MAX_TRACKED:
                    self._prune(now)
                bucket = self._buckets[key] = _Bucket(tokens=float(budget.burst), stamp=now)
            bucket.tokens = min(
                float(budget.burst), bucket.tokens + (now - bucket.stamp) * budget.rate
            )
            bucket.stamp = now
            if bucket.inflight >= budget.concurrency:
                raise TooManyRequests(
                    f"{budget.concurrency} {kind} answers of yours are already running; "
                    "retry when one has finished",
                    retry_after_s=1,
                    limit="concurrency",
                    kind=kind,
                    max=budget.concurrency,
                )
            if self._inflight >= self.max_inflight:
                raise TooManyRequests(
                    f"the server is answering {self.max_inflight} queries and exports; retry",
                    retry_after_s=1,
                    limit="server",
                    kind=kind,
                    max=self.max_inflight,
                )
            if bucket.tokens < 1.0:
                wait = (1.0 - bucket.tokens) / budget.rate
                raise TooManyRequests(
                    f"more than {budget.rate:g} {kind} answers per second (burst {budget.burst})",
                    retry_after_s=max(1, math.ceil(wait)),
                    limit="rate",
                    kind=kind,
                    rate=budget.rate,
                    burst=budget.burst,
                )
            bucket.tokens -= 1.0
            bucket.inflight += 1
            self._inflight += 1
        return Slot(self, key)

    def _release(self, key: tuple[str, str]) -> None:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is not None and bucket.inflight > 0:
                bucket.inflight -= 1
                self._inflight -= 1

    def _prune(self, now: float) -> None:
        for key, b in list(self._buckets.items()):
            budget = self.budgets[key[1]]
            refilled = b.tokens + (now - b.stamp) * budget.rate >= budget.burst
            if b.inflight == 0 and refilled:
                del self._buckets[key]


class Held(Response):
    """A response that holds a :class:`Slot` until it has been sent (or sending failed:
    the client went away mid-stream), so a streamed export counts while it streams."""

    def __init__(self, inner: Response, slot: Slot) -> None:
        self.inner = inner
        self.slot = slot
        self.status_code = inner.status_code
        self.background = inner.background
        self.raw_headers = inner.raw_headers
        # Never sent at all (an error between the endpoint and the server): freed when
        # the response object goes.
        weakref.finalize(self, slot.release)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.inner.background is None:
            self.inner.background = self.background
        try:
            await self.inner(scope, receive, send)
        finally:
            self.slot.release()
