"""One JSON error body for every failure the API reports.

``{"ok": false, "status": 404, "code": "dataset_not_found", "error": "no dataset 'x'",
"detail": {...}}`` — the same fields go out on the websocket as ``{"type": "error", ...}``.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from catalog.errors import HubError, unavailable
from eventlog.message import LogUnavailable

log = logging.getLogger(__name__)


def error_body(
    status: int, code: str, message: str, detail: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "status": status, "code": code, "error": message}
    if detail:
        body["detail"] = detail
    return body


def hub_error_body(err: HubError) -> dict[str, Any]:
    return error_body(err.status, err.code, err.message, err.detail)


def error_message(
    status: int, code: str, message: str, detail: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """The error as a websocket message: the same body, ``"type": "error"``, and ``extra``
    (the channel it concerns, say)."""
    return {"type": "error", **error_body(status, code, message, detail), **extra}


def hub_error_message(err: HubError, **extra: Any) -> dict[str, Any]:
    return error_message(err.status, err.code, err.message, err.detail, **extra)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def _headers(exc: HubError) -> dict[str, str]:
    """A 401's challenge; ``Retry-After`` for an error that says when to come back (a limit
    reached: 429; a server blockhub needs is down: 503, :class:`ServiceUnavailable`)."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers


#: Drivers' errors that may mean a server is down (:func:`catalog.errors.unavailable` tells).
DRIVER_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
    LogUnavailable,
    redis.ConnectionError,
    redis.TimeoutError,
)


def install(app: FastAPI) -> None:
    @app.exception_handler(HubError)
    async def _hub(_: Request, exc: HubError) -> JSONResponse:
        return JSONResponse(hub_error_body(exc), status_code=exc.status, headers=_headers(exc))

    async def _driver(_: Request, exc: Exception) -> JSONResponse:
        """A server blockhub depends on is down: 503 with Retry-After, the cause in the log
        (one line, no traceback: an outage makes many of these)."""
        err = unavailable(exc)
        if err is None:
            log.error("unhandled error", exc_info=exc)
            return JSONResponse(
                error_body(500, "internal_error", "internal error; see the server log"),
                status_code=500,
            )
        log.warning("%s unavailable: %s", err.service, exc)
        return JSONResponse(hub_error_body(err), status_code=503, headers=_headers(err))

    for driver_error in DRIVER_ERRORS:
        app.add_exception_handler(driver_error, _driver)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
            for e in exc.errors()
        ]
        msg = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return JSONResponse(
            error_body(422, "invalid_request", msg, {"problems": problems}), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(exc.status_code, code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if unavailable(exc) is not None:  # a driver's error wrapped by a library (pyiceberg)
            return await _driver(request, exc)
        log.exception("unhandled error")
        return JSONResponse(
            error_body(500, "internal_error", "internal error; see the server log"),
            status_code=500,
        )


class ErrorBody(BaseModel):
    """The one error body (documented on every route)."""

    ok: bool = False
    status: int
    code: str
    error: str
    detail: dict[str, Any] | None = None


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all with :class:`ErrorBody`."""
    text = {
        400: "Bad request (invalid filter, SQL refused or failed)",
        401: "Missing, unknown, expired or revoked token",
        403: "Forbidden by the sharing rules or the caller's role",
        404: "No such dataset, version or object",
        408: "Query ran past its time limit",
        409: "Conflict with the current state",
        413: "Request body larger than its limit",
        414: "URL longer than its limit",
        422: "Invalid request body",
        429: "Too many query or export answers at once or per second; retry after "
        "`Retry-After` seconds",
        503: "A server blockhub depends on is unavailable; retry after `Retry-After` seconds",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for s in statuses:
        out[s] = {"model": ErrorBody, "description": text.get(s, "Error")}
        if s in (429, 503):
            out[s]["headers"] = {"Retry-After": RETRY_AFTER}
    return out


RETRY_AFTER = {
    "description": "seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 1},
}


STANDARD_ERRORS = error_responses(400, 401, 403, 404, 422)


def json_error_content(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """For routes whose success is not JSON (an HTML page): errors are still JSON bodies."""
    schema = {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
    return {s: {"content": {"application/json": schema}} for s in statuses}
