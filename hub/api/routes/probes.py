"""Probes for the machinery around the hub: readiness for a load balancer or Kubernetes,
metrics for Prometheus.  (``/healthz``, liveness, is in ``hub.api.app``.)

Who may read them (docs/operations.md "Observability"):

- ``/readyz`` — anyone, like ``/healthz``: a load balancer has no token.  It names the
  dependency that failed (``catalog``, ``lake``, ``event_log``, ``mqtt``) and nothing
  else: no address, no driver message (those go to the log).
- ``/metrics`` — the bearer token of ``BLOCKHUB_METRICS_TOKEN`` (Prometheus'
  ``authorization.credentials_file``) or an admin's token: the totals name every
  registered dataset, conditional ones included, which not every principal may know of.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from catalog.errors import AccessDenied
from hub.api.common.deps import CredentialsDep, HubDep, authenticate, bearer_token
from hub.api.common.errors import error_body, error_responses
from hub.observability import metrics
from hub.observability.readiness import readiness

router = APIRouter(tags=["ops"])

Outcome = Literal["ok", "failed", "skipped"]


class Checks(BaseModel):
    catalog: Outcome
    lake: Outcome
    event_log: Outcome
    mqtt: Outcome


class Ready(BaseModel):
    """Every dependency answered (``failed`` only for one the caller asked to ignore); a
    503 carries the one error body, ``detail.failed`` naming what failed."""

    ok: bool
    checks: Checks


@router.get(
    "/readyz",
    summary="Readiness: catalog, lake, event log and MQTT brokers answer (no authentication)",
    response_model=Ready,
    responses=error_responses(422, 503),
)
async def readyz(
    request: Request,
    hub: HubDep,
    ignore: Annotated[
        list[Literal["catalog", "lake", "event_log", "mqtt"]],
        Query(
            description="dependencies whose failure does not make this probe fail (a proxy"
            " that should keep serving the API while a feed's broker is down: ignore=mqtt)"
        ),
    ] = [],  # noqa: B006
) -> JSONResponse:
    checks = await readiness(
        hub, getattr(request.app.state, "feeds", None), hub.settings.ready_timeout_s
    )
    failed = [n for n, outcome in checks.items() if outcome == "failed" and n not in ignore]
    if not failed:
        return JSONResponse({"ok": True, "checks": checks})
    body = error_body(
        503,
        "not_ready",
        f"not ready: {', '.join(failed)} unavailable",
        {"failed": failed, "checks": checks},
    )
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@router.get(
    "/metrics",
    summary="Prometheus metrics (the metrics token or an admin's token)",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format", "content": {metrics.CONTENT_TYPE: {}}},
        **error_responses(401, 403),
    },
)
async def prometheus_metrics(request: Request, hub: HubDep, credentials: CredentialsDep) -> Any:
    token = bearer_token(credentials)
    expected = hub.settings.metrics_secret()
    if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
        principal = await run_in_threadpool(authenticate, hub, credentials)
        if not principal.is_admin:
            raise AccessDenied("only the metrics token or an admin may read /metrics")
    collector = request.app.state.metrics
    body = await run_in_threadpool(metrics.exposition, collector)
    return Response(body, media_type=metrics.CONTENT_TYPE)
