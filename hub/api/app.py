"""The ASGI application: REST API, websocket and OpenAPI, around one :class:`Hub`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hub.api import errors
from hub.api.routes import datasets, ops_routes, query
from hub.api.ws import RawSend
from hub.api.ws import router as ws_router
from hub.context import Hub
from hub.ops import OpsRuntime
from hub.settings import Settings

DESCRIPTION = """\
blockhub exchange API. Every endpoint but `/healthz` needs `Authorization: Bearer <token>`.
Errors share one body: `{"ok": false, "status", "code", "error", "detail"}`.
The websocket protocol at `/v1/ws` is described in docs/websocket.md.
"""


def create_app(settings: Settings | None = None, hub: Hub | None = None) -> FastAPI:
    """Build the app; the hub is opened from settings unless one is given."""
    owned = hub is None
    the_hub = hub or Hub.open(settings or Settings())
    ops = OpsRuntime(the_hub)  # checks the alert rules file before serving

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await the_hub.bus.start()
        await ops.start()
        try:
            yield
        finally:
            await ops.stop()
            await the_hub.bus.stop()
            if owned:
                the_hub.close()

    app = FastAPI(title="blockhub", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.hub = the_hub
    app.state.ops = ops
    errors.install(app)
    app.add_middleware(RawSend)
    app.include_router(datasets.router)
    app.include_router(datasets.runs_router)
    app.include_router(query.router)
    app.include_router(ws_router)
    app.include_router(ops_routes.router)

    @app.get("/healthz", tags=["ops"], summary="Liveness (no authentication, no data)")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    return app
