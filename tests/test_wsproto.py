"""The direct frame writer rides on uvicorn's websocket protocol through its supported
option (``uvicorn.Config(ws=<class>)``); what it reads of uvicorn's object is checked here,
so an upgrade that renames or drops any of it fails this test, naming the attribute."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.server import ServerProtocol

from hub.api.server import config
from hub.api.wsproto import USED_ATTRIBUTES, DirectWebSocketProtocol, serving_protocol
from hub.assembly.context import Hub
from hub.settings import Settings


async def _noop_app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    return None


def _protocol() -> DirectWebSocketProtocol:
    cfg = uvicorn.Config(_noop_app, ws=DirectWebSocketProtocol, log_level="warning")
    cfg.load()
    loop = asyncio.new_event_loop()
    try:
        return DirectWebSocketProtocol(
            config=cfg, server_state=ServerState(), app_state={}, _loop=loop
        )
    finally:
        loop.close()


def test_uvicorn_still_has_what_the_direct_writer_reads() -> None:
    proto = _protocol()
    missing = [a for a in USED_ATTRIBUTES if not hasattr(proto, a)]
    assert missing == [], f"uvicorn's WebSocketsSansIOProtocol no longer has {missing}"
    assert isinstance(proto.conn, ServerProtocol)
    assert proto.close_sent is False
    # The hook runs after uvicorn's own flow control, which must still be a method of its own.
    assert "pause_writing" in vars(WebSocketsSansIOProtocol)
    # The ASGI send uvicorn hands the app is the protocol's bound method: that is how the
    # middleware finds the protocol serving a connection.
    source = inspect.getsource(WebSocketsSansIOProtocol.run_asgi)
    assert "self.app(self.scope, self.receive, self.send)" in source
    assert serving_protocol(proto.send) is None  # no transport yet: not usable
    proto.transport = object()  # type: ignore[assignment]
    assert serving_protocol(proto.send) is proto


def test_pause_writing_keeps_uvicorn_s_handling_and_calls_the_hook() -> None:
    proto = _protocol()
    calls: list[str] = []
    proto.pause_writing()  # no hook yet: uvicorn's alone
    assert not proto.writable.is_set()
    proto.writable.set()
    proto.on_pause_writing = lambda: calls.append("slow")
    proto.pause_writing()
    assert calls == ["slow"] and not proto.writable.is_set()


def test_the_server_runs_websockets_on_this_protocol(tmp_path: Path) -> None:
    hub = Hub.open(Settings(home=tmp_path / "home"))
    try:
        assert config(hub, "127.0.0.1", 0).ws is DirectWebSocketProtocol
    finally:
        hub.close()
