"""Running the app under uvicorn, in the foreground or in a thread (tours, tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from hub.api.app import create_app
from hub.api.wsproto import DirectWebSocketProtocol
from hub.assembly.context import Hub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(hub: Hub, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(
        create_app(hub.settings, hub=hub),
        host=host,
        port=port,
        log_level=log_level,
        # The app logs each request itself, with its id, route and time
        # (hub.observability.requests); JSON logs: uvicorn's own lines go through the
        # root logger's JSON handler instead of uvicorn's text handlers.
        access_log=False,
        log_config=None if hub.settings.logs_as_json else LOGGING_CONFIG,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        # uvicorn's sans-I/O protocol, subclassed for the direct frame writer (hub.api.wsproto)
        ws=DirectWebSocketProtocol,
        # Browsers and mobile stacks ask for compression by default; a compressed frame is
        # made per connection, where an uncompressed one is made once for all (D36).
        ws_per_message_deflate=hub.settings.ws_deflate,
    )


def serve(hub: Hub, host: str, port: int) -> None:
    """Serve until interrupted."""
    uvicorn.Server(config(hub, host, port)).run()


@contextlib.contextmanager
def serving(hub: Hub, port: int, host: str = "127.0.0.1") -> Iterator[uvicorn.Server]:
    """Serve on host:port in a thread for the duration of the block."""
    server = uvicorn.Server(config(hub, host, port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="blockhub-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(10)
