"""Every way data leaves the hub, in one list (docs/security.md, "Outbound paths").

Each REST route and each websocket channel kind is an :class:`Outbound` entry: what it
carries, what it must enforce, and how a test exercises it for a principal.  The access
matrix (tests/test_access_matrix.py) is generated from this list — roles × sharing types
× paths — and fails when the app has a route or the websocket a channel kind that is not
listed here, so a new path cannot be added without saying what it enforces.

``carries``:

- ``values``: dataset values (rows, events, samples): the reader's columns, masks, rows;
- ``counts``: counts or per-region breakdowns of rows: only of rows the reader sees;
- ``metadata``: catalog facts that are public to registered agencies (names, columns,
  sharing types, grants of the caller's own agency), no values or counts of rows;
- ``control``: changes (register, approve, ingest, act on an order): decided by role;
  what they answer is checked like ``metadata``.

``exercise`` is a request the matrix sends as each principal: ``(method, path, params)``
for a route (``{dataset}``, ``{batch}``, ``{run}``, ``{alert}``, ``{order}`` filled in by
the test world), or a subscribe message for a channel.  ``None``: the path carries no
dataset value or count (the matrix still requires its entry and its ``enforces`` text).
One module of ~500 lines on purpose: the list is read as one (docs/security.md), and a
path that is not in it fails the access matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Carries = Literal["values", "counts", "metadata", "control"]


@dataclass(frozen=True)
class Outbound:
    name: str
    kind: Literal["route", "channel"]
    match: str  # "GET /v1/..." for a route, the channel kind (``feed``, ``alerts``) for a channel
    carries: Carries
    enforces: str
    exercise: dict[str, Any] | None = None


def _get(path: str, **params: Any) -> dict[str, Any]:
    return {"method": "GET", "path": path, "params": params}


def _sub(channel: str, **extra: Any) -> dict[str, Any]:
    return {"op": "subscribe", "channel": channel, **extra}


SQL = "SQL through Exchange.query: the reader's profile view (columns, masks, row filter)"

PATHS: tuple[Outbound, ...] = (
    # -- the exchange: SQL-backed -------------------------------------------------------
    Outbound(
        "query",
        "route",
        "POST /v1/query",
        "values",
        SQL,
        {"method": "POST", "path": "/v1/query", "json": {"sql": "SELECT * FROM {dataset}"}},
    ),
    Outbound(
        "query-get",
        "route",
        "GET /v1/query",
        "values",
        SQL,
        _get("/v1/query", sql="SELECT * FROM {dataset}"),
    ),
    Outbound(
        "query-count",
        "route",
        "POST /v1/query#count",
        "counts",
        SQL,
        {
            "method": "POST",
            "path": "/v1/query",
            "json": {"sql": "SELECT count(*) AS n FROM {dataset}"},
        },
    ),
    Outbound(
        "export-csv",
        "route",
        "GET /v1/query#csv",
        "values",
        SQL,
        _get("/v1/query", sql="SELECT * FROM {dataset}", format="csv"),
    ),
    Outbound(
        "rows",
        "route",
        "GET /v1/datasets/{dataset_id}/rows",
        "values",
        SQL,
        _get("/v1/datasets/{dataset}/rows"),
    ),
    Outbound(
        "rows-filter",
        "route",
        "GET /v1/datasets/{dataset_id}/rows#filter",
        "values",
        SQL + "; a filter compares the masked value",
        _get("/v1/datasets/{dataset}/rows", filter="caller_phone:eq:{raw_phone}"),
    ),
    Outbound(
        "sample",
        "route",
        "GET /v1/datasets/{dataset_id}/sample",
        "values",
        SQL,
        _get("/v1/datasets/{dataset}/sample"),
    ),
    Outbound(
        "block-region",
        "route",
        "GET /v1/blocks/region/{code}",
        "counts",
        SQL + "; datasets the reader may not read are not mentioned",
        _get("/v1/blocks/region/520100"),
    ),
    Outbound(
        "block-children",
        "route",
        "GET /v1/blocks/region/{code}/children",
        "counts",
        SQL,
        _get("/v1/blocks/region/520100/children"),
    ),
    Outbound(
        "block-enterprise", "route", "GET /v1/blocks/enterprise/{credit_code}", "counts", SQL, None
    ),
    # -- describe: catalog, versions, runs, quality -----------------------------------
    Outbound(
        "catalog",
        "route",
        "GET /v1/catalog",
        "metadata",
        "public directory: entries and the caller's own access; no values or counts",
        _get("/v1/catalog"),
    ),
    Outbound(
        "catalog-entry",
        "route",
        "GET /v1/catalog/{dataset_id}",
        "metadata",
        "as /v1/catalog",
        _get("/v1/catalog/{dataset}"),
    ),
    Outbound(
        "datasets",
        "route",
        "GET /v1/datasets",
        "metadata",
        "readable datasets only",
        _get("/v1/datasets"),
    ),
    Outbound(
        "describe",
        "route",
        "GET /v1/datasets/{dataset_id}",
        "counts",
        "readable only; version and run counts withheld from a row-filtered reader; run "
        "errors scrubbed of values for non-owners",
        _get("/v1/datasets/{dataset}"),
    ),
    Outbound(
        "versions",
        "route",
        "GET /v1/datasets/{dataset_id}/versions",
        "counts",
        "readable only; counts withheld from a row-filtered reader",
        _get("/v1/datasets/{dataset}/versions"),
    ),
    Outbound(
        "runs",
        "route",
        "GET /v1/datasets/{dataset_id}/runs",
        "counts",
        "readable only; counts and details withheld, errors scrubbed (non-owners)",
        _get("/v1/datasets/{dataset}/runs"),
    ),
    Outbound("run", "route", "GET /v1/runs/{run_id}", "counts", "as runs", _get("/v1/runs/{run}")),
    Outbound(
        "lineage",
        "route",
        "GET /v1/datasets/{dataset_id}/lineage",
        "metadata",
        "readable only; consumers for the owner's stewards and admins",
        _get("/v1/datasets/{dataset}/lineage"),
    ),
    Outbound(
        "quality",
        "route",
        "GET /v1/datasets/{dataset_id}/quality",
        "values",
        "readers of every row only; samples of invisible columns dropped, masked "
        "columns masked, sample keys only when the key columns are visible",
        _get("/v1/datasets/{dataset}/quality"),
    ),
    Outbound(
        "quality-report",
        "route",
        "GET /v1/datasets/{dataset_id}/quality/report",
        "values",
        "as quality",
        _get("/v1/datasets/{dataset}/quality/report"),
    ),
    Outbound(
        "quarantine",
        "route",
        "GET /v1/datasets/{dataset_id}/quarantine",
        "counts",
        "the owning agency's stewards and admins",
        _get("/v1/datasets/{dataset}/quarantine"),
    ),
    Outbound(
        "quarantine-rows",
        "route",
        "GET /v1/datasets/{dataset_id}/quarantine/{batch_id}/rows",
        "values",
        "stewards of the owner (raw) and admins (their access: masked unless a "
        "grant lifts it; audited as access.unmasked when it does)",
        _get("/v1/datasets/{dataset}/quarantine/{batch}/rows"),
    ),
    Outbound(
        "feed-status",
        "route",
        "GET /v1/feeds/{feed_id}",
        "counts",
        "readable only; event counts withheld from a row-filtered reader",
        None,
    ),
    # -- live operations ----------------------------------------------------------------
    Outbound(
        "alerts",
        "route",
        "GET /v1/alerts",
        "values",
        "operators and admins; each alert disclosed by the receiver's access to its "
        "source dataset (catalog.access.disclosure.disclose_alert)",
        _get("/v1/alerts"),
    ),
    Outbound(
        "alert",
        "route",
        "GET /v1/alerts/{alert_id}",
        "values",
        "as alerts",
        _get("/v1/alerts/{alert}"),
    ),
    Outbound(
        "orders",
        "route",
        "GET /v1/orders",
        "values",
        "the caller's orders; each order's event disclosed by the receiver's access",
        _get("/v1/orders"),
    ),
    Outbound(
        "order",
        "route",
        "GET /v1/orders/{order_id}",
        "values",
        "as orders",
        _get("/v1/orders/{order}"),
    ),
    Outbound(
        "presence",
        "route",
        "GET /v1/presence",
        "metadata",
        "operators and admins; who is connected, no data",
        None,
    ),
    Outbound(
        "audit",
        "route",
        "GET /v1/audit",
        "metadata",
        "admins all, stewards their agency's datasets; entries hold no values",
        None,
    ),
    Outbound("audit-verify", "route", "GET /v1/audit/verify", "metadata", "admins", None),
    Outbound(
        "audit-verify-anchored",
        "route",
        "POST /v1/audit/verify",
        "metadata",
        "admins; the anchors sent are only compared with the chain",
        None,
    ),
    Outbound(
        "audit-anchor",
        "route",
        "GET /v1/audit/anchor",
        "metadata",
        "admins; the chain's head (seq, seal, time, count), signed: no entry content",
        None,
    ),
    Outbound(
        "access-requests",
        "route",
        "GET /v1/access-requests",
        "metadata",
        "the caller's agency's requests and requests for its datasets",
        None,
    ),
    Outbound(
        "access-request",
        "route",
        "GET /v1/access-requests/{request_id}",
        "metadata",
        "as access-requests",
        None,
    ),
    Outbound("healthz", "route", "GET /healthz", "metadata", "no data", None),
    Outbound("readyz", "route", "GET /readyz", "metadata", "which dependency failed", None),
    Outbound(
        "metrics",
        "route",
        "GET /metrics",
        "counts",
        "the metrics token or an admin only: per-dataset run and row totals (D52)",
        None,
    ),
    Outbound("openapi", "route", "GET /openapi.json", "metadata", "the API's description", None),
    Outbound("docs", "route", "GET /docs", "metadata", "the API's description", None),
    Outbound("docs-oauth", "route", "GET /docs/oauth2-redirect", "metadata", "no data", None),
    Outbound("redoc", "route", "GET /redoc", "metadata", "the API's description", None),
    Outbound(
        "dashboard",
        "route",
        "GET /dashboard",
        "metadata",
        "static files; the page reads through the API as its user",
        None,
    ),
    # -- changes (answers checked like metadata) ----------------------------------------
    Outbound(
        "ingest",
        "route",
        "POST /v1/datasets/{dataset_id}/ingest",
        "control",
        "stewards of the owner, admins",
        None,
    ),
    Outbound("register", "route", "POST /v1/datasets", "control", "stewards, admins", None),
    Outbound(
        "update",
        "route",
        "PUT /v1/datasets/{dataset_id}",
        "control",
        "stewards of the owner, admins",
        None,
    ),
    Outbound(
        "release",
        "route",
        "POST /v1/datasets/{dataset_id}/quarantine/{batch_id}/release",
        "control",
        "stewards of the owner, admins; answers counts",
        None,
    ),
    Outbound(
        "discard",
        "route",
        "POST /v1/datasets/{dataset_id}/quarantine/{batch_id}/discard",
        "control",
        "stewards of the owner, admins",
        None,
    ),
    Outbound(
        "request-access",
        "route",
        "POST /v1/datasets/{dataset_id}/access-requests",
        "control",
        "other agencies' developers and stewards",
        None,
    ),
    Outbound(
        "approve",
        "route",
        "POST /v1/access-requests/{request_id}/approve",
        "control",
        "stewards of the owner, admins; never wider than requested",
        None,
    ),
    Outbound(
        "refuse",
        "route",
        "POST /v1/access-requests/{request_id}/refuse",
        "control",
        "as approve",
        None,
    ),
    Outbound(
        "revoke",
        "route",
        "POST /v1/access-requests/{request_id}/revoke",
        "control",
        "as approve",
        None,
    ),
    Outbound(
        "alert-ack",
        "route",
        "POST /v1/alerts/{alert_id}/ack",
        "values",
        "operators and admins; the answer disclosed as alerts",
        None,
    ),
    Outbound(
        "alert-resolve",
        "route",
        "POST /v1/alerts/{alert_id}/resolve",
        "values",
        "as alert-ack",
        None,
    ),
    Outbound(
        "order-open",
        "route",
        "POST /v1/orders",
        "values",
        "operators and admins; an event with values must name its source",
        None,
    ),
    Outbound(
        "order-act",
        "route",
        "POST /v1/orders/{order_id}/{action}",
        "values",
        "the order's target, its agency, operators; the answer disclosed as orders",
        None,
    ),
    Outbound(
        "feed-push",
        "route",
        "POST /v1/feeds/{feed_id}/events",
        "control",
        "the feed's own agency",
        None,
    ),
    Outbound("ws", "route", "WS /v1/ws", "values", "authenticated; the channels below", None),
    # -- websocket channels -------------------------------------------------------------
    Outbound(
        "dataset-channel",
        "channel",
        "dataset",
        "counts",
        "readable; counts and rows per region narrowed or withheld (disclose_update)",
        _sub("dataset:{dataset}", since=0),
    ),
    Outbound(
        "feed-channel",
        "channel",
        "feed",
        "values",
        "readable; row filter, columns, masks per event (disclose_record)",
        _sub("feed:{feed}", since=0),
    ),
    Outbound(
        "feed-filter",
        "channel",
        "feed#filter",
        "values",
        "a filter names visible columns only and compares the masked value",
        _sub("feed:{feed}", since=0, filter={"caller_phone": ["{raw_phone}"]}),
    ),
    Outbound(
        "block-channel",
        "channel",
        "block",
        "values",
        "datasets whose region key the reader sees unmasked; then as feed and dataset",
        _sub("block:520100"),
    ),
    Outbound(
        "alerts-channel",
        "channel",
        "alerts",
        "values",
        "operators and admins; disclose_alert per receiver",
        _sub("alerts", since=0),
    ),
    Outbound(
        "orders-channel",
        "channel",
        "orders",
        "values",
        "the target, its agency, operators; the event disclosed per receiver",
        _sub("orders:{unit}", since=0),
    ),
    Outbound(
        "presence-channel",
        "channel",
        "presence",
        "metadata",
        "operators and admins; connections, no data",
        None,
    ),
)


def routes() -> dict[str, Outbound]:
    """Route entries by ``"METHOD /path"`` (the part of ``match`` before any ``#``)."""
    return {p.match.split("#")[0]: p for p in PATHS if p.kind == "route"}


def channel_kinds() -> set[str]:
    """The channel kinds the list covers (``feed``, ``alerts`` …)."""
    return {p.match.split("#")[0] for p in PATHS if p.kind == "channel"}
