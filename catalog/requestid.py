"""The id of the request a piece of work is done for, carried from the HTTP edge into the
audit entries and events that request causes.

A :class:`contextvars.ContextVar`: the hub's edge (``hub.observability.requests``) sets it
for each HTTP request and websocket connection; worker threads started with the context
(``asyncio.to_thread``, Starlette's thread pool) see it too.  Work outside any request (a
CLI command, an Airflow task, the ops tick) has none, and nothing is added.
"""

from __future__ import annotations

import re
from contextvars import ContextVar, Token

current: ContextVar[str | None] = ContextVar("blockhub_request_id", default=None)

#: What a caller's ``X-Request-ID`` may look like to be kept (else a new id is made): it
#: lands in logs and the audit chain, so no spaces, quotes or control characters.
VALID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def get() -> str | None:
    """The current request's id, or None outside a request."""
    return current.get()


def set_id(request_id: str | None) -> Token[str | None]:
    return current.set(request_id)


def reset(token: Token[str | None]) -> None:
    current.reset(token)


def stamp(mapping: dict[str, object]) -> dict[str, object]:
    """``mapping`` with ``request_id`` added when there is a current request (an id the
    mapping already carries is kept)."""
    rid = current.get()
    if rid is not None and "request_id" not in mapping:
        mapping["request_id"] = rid
    return mapping
