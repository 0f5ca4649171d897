"""uvicorn's sans-I/O websocket protocol, extended through uvicorn's own option for it.

The fan-out writes frames built once for every subscriber straight to a connection's
transport (D34, :class:`hub.api.ws._Direct`).  For that it needs three things of the
protocol object that serves a websocket: its ``websockets`` connection (``conn``), its
transport, and whether it has sent its close (``close_sent``) — and it needs to hear when
the transport's flow control pauses writing (a reader that stopped reading).

uvicorn takes the websocket protocol as a class (``uvicorn.Config(ws=...)``, its supported
extension point): :class:`DirectWebSocketProtocol` is that class, a subclass of uvicorn's
``WebSocketsSansIOProtocol`` that calls :attr:`~DirectWebSocketProtocol.on_pause_writing`
after uvicorn's own ``pause_writing``, rather than a handler assigned over uvicorn's on the
instance.  The attributes it reads are uvicorn's, not a public API: uvicorn is pinned
(constraints.txt) and tests/test_wsproto.py fails when a new version renames or drops one
of them, naming it.  Under another server (or uvicorn's other protocols) the direct writer
is not used and frames go through ASGI ``send``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

#: What the direct writer reads of the protocol object, checked by tests/test_wsproto.py.
USED_ATTRIBUTES = ("conn", "transport", "close_sent")


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websocket protocol with a flow-control hook for the fan-out."""

    #: Called after uvicorn's own handling when the transport pauses writing (its buffer
    #: crossed the high-water mark): the fan-out drops a subscriber that does not read.
    on_pause_writing: Callable[[], None] | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        hook = self.on_pause_writing
        if hook is not None:
            hook()


def serving_protocol(send: Any) -> DirectWebSocketProtocol | None:
    """The protocol object behind a websocket scope's ASGI ``send`` (uvicorn passes its
    bound method), when it is ours and has a connection and a transport; else None."""
    proto = getattr(send, "__self__", None)
    if not isinstance(proto, DirectWebSocketProtocol):
        return None
    if getattr(proto, "conn", None) is None or getattr(proto, "transport", None) is None:
        return None
    return proto
