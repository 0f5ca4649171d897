"""The ASGI application: REST API, websocket and OpenAPI, around one :class:`Hub`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from hub.api.common import errors
from hub.api.common.limits import Budget, Limiter, RequestBounds, RequestLimits
from hub.api.routes import (
    audit,
    blocks,
    catalog,
    datasets,
    feeds,
    grants,
    ops_routes,
    probes,
    quality,
    query,
    rows,
)
from hub.api.ws import RawSend
from hub.api.ws import router as ws_router
from hub.assembly.context import Hub
from hub.live.auditing import audit_start
from hub.live.feeds import FeedRunner
from hub.live.freshness import freshness_task
from hub.live.ops import OpsRuntime
from hub.observability.metrics import HubCollector
from hub.observability.requests import RequestObserver
from hub.settings import Settings

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboard"

DESCRIPTION = """\
blockhub exchange API. Every endpoint but the probes `/healthz` and `/readyz` needs
`Authorization: Bearer <token>` (`/metrics`: the metrics token or an admin's).
Errors share one body: `{"ok": false, "status", "code", "error", "detail"}`.
Limits (docs/api.md): request bodies, URLs and JSON nesting are bounded (413, 414, 400);
query and export answers per principal are limited in number at once and per second
(429 with `Retry-After`).
The websocket protocol at `/v1/ws` is described in docs/websocket.md.
"""


def create_app(settings: Settings | None = None, hub: Hub | None = None) -> FastAPI:
    """Build the app; the hub is opened from settings unless one is given."""
    owned = hub is None
    the_hub = hub or Hub.open(settings or Settings())
    ops = OpsRuntime(the_hub)  # checks the alert rules file before serving

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(audit_start, the_hub)  # access settings on record
        the_hub.exchange.warm()  # replicas of large versions start building (D24)
        await the_hub.bus.start()
        await app.state.feeds.start()  # live feeds: MQTT subscribers and flushers
        await ops.start()
        try:
            async with freshness_task(the_hub, the_hub.settings.freshness_interval_s):
                yield
        finally:
            await ops.stop()
            await app.state.feeds.stop()
            await the_hub.bus.stop()
            if owned:
                the_hub.close()

    app = FastAPI(
        title="blockhub",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Answered by RequestLimits in front of every route (400: NUL in the URL, a JSON
        # body that is not strict JSON or nests too deep).
        responses=errors.error_responses(400, 413, 414),
    )
    app.state.hub = the_hub
    app.state.limiter = limiter(the_hub.settings)
    app.state.feeds = FeedRunner(the_hub)
    app.state.ops = ops
    errors.install(app)
    app.add_middleware(RawSend)
    s = the_hub.settings
    app.add_middleware(
        RequestLimits,
        bounds=lambda: RequestBounds(
            max_body_bytes=s.max_body_bytes,
            max_json_depth=s.max_json_depth,
            max_url_bytes=s.max_url_bytes,
            feed_body_bytes=s.feed_max_body_bytes,
        ),
    )
    app.include_router(datasets.router)
    app.include_router(datasets.runs_router)
    app.include_router(query.router)
    app.include_router(blocks.router)
    app.include_router(quality.router)
    app.include_router(rows.router)
    app.include_router(catalog.router)
    app.include_router(grants.router)
    app.include_router(audit.router)
    app.include_router(ws_router)
    app.include_router(ops_routes.router)
    app.include_router(feeds.router)
    app.include_router(probes.router)
    app.state.metrics = HubCollector(
        the_hub, lambda: ops.presence, ttl_s=the_hub.settings.metrics_catalog_s
    )
    # Outermost: every answer gets its request id, metrics and access-log line, the limit
    # checks' refusals included (hub.observability.requests).
    app.add_middleware(RequestObserver)

    # The dashboard is static code with no data in it; everything it shows comes through
    # the authenticated API with the operator's own token.
    app.mount("/dashboard", StaticFiles(directory=DASHBOARD, html=True), name="dashboard")

    @app.get(
        "/healthz",
        tags=["ops"],
        summary="Liveness (no authentication, no data)",
        response_model=Health,
    )
    def healthz() -> dict[str, bool]:
        """``warm``: no serving replica is being built (queries read the lake until then).
        ``event_log``: the bus reads the event log (false while its server is unreachable;
        live delivery resumes by itself when it is back, docs/operations.md "Failures")."""
        bus = the_hub.bus
        return {
            "ok": True,
            "warm": the_hub.exchange.warm_done(),
            "event_log": bus.ready and not bus.outage.failures,
        }

    return app


class Health(BaseModel):
    ok: bool
    warm: bool


def limiter(settings: Settings) -> Limiter:
    """The per-principal limits of query and export answers, from settings."""
    s = settings
    return Limiter(
        {
            "query": Budget(s.query_concurrency, s.query_rate, s.query_burst),
            "export": Budget(s.export_concurrency, s.export_rate, s.export_burst),
        },
        max_inflight=s.answers_max_inflight,
    )
