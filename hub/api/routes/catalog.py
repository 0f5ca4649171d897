"""The catalog: register and update datasets from manifests, search, public entries,
lineage and consumers."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from catalog.access.policy import can_manage
from catalog.datasets.manifest import Manifest, parse_manifest
from catalog.datasets.search import freshness, search
from catalog.datasets.store import DatasetRecord, Version
from catalog.db import utcnow
from catalog.errors import AccessDenied, Conflict, InvalidRequest, ManifestError
from catalog.identity.store import Principal
from hub.api.common.deps import HubDep, PrincipalDep
from hub.api.common.errors import error_responses
from hub.api.common.links import links
from hub.assembly.context import Hub

router = APIRouter(tags=["catalog"], responses=error_responses(400, 401, 403, 404, 409, 422))

MAX_MANIFEST_BYTES = 1_000_000


class CatalogColumn(BaseModel):
    name: str
    type: str
    description: str
    pii: str | None
    classification: str | None


class FreshnessOut(BaseModel):
    last_published: datetime | None
    update_frequency: str | None
    age_s: float | None
    stale: bool | None


class AccessOut(BaseModel):
    readable: bool
    via: str
    columns: list[str]
    masked: dict[str, str]
    row_filters: list[dict[str, list[str]]] | None
    grants: list[str]
    reason: str


class CatalogEntry(BaseModel):
    id: str
    title: str
    description: str
    agency: str
    sharing: str
    sharing_conditions: str | None
    legal_basis: str | None
    classification: str
    tags: list[str]
    columns: list[CatalogColumn]
    latest_version: int | None
    freshness: FreshnessOut
    access: AccessOut


class RegisterOut(BaseModel):
    id: str
    agency: str
    created: bool
    updated_at: datetime


class Consumer(BaseModel):
    principal: str
    agency: str
    reads: int
    last: str


class DerivedQuery(BaseModel):
    sql_fingerprint: str
    principal: str
    agency: str
    action: str
    reads_with: list[str]
    at: str
    row_count: int | None


class LineageOut(BaseModel):
    dataset: str
    source: dict[str, Any]
    derived_queries: list[DerivedQuery]
    consumers: list[Consumer]


def _entry(
    hub: Hub, principal: Principal, d: DatasetRecord, latest: Version | None
) -> dict[str, Any]:
    m = d.manifest
    a = hub.exchange.access(principal, d.id)
    return {
        "id": d.id,
        "title": d.title,
        "description": m.description,
        "agency": d.agency_id,
        "sharing": d.sharing,
        "sharing_conditions": m.sharing.conditions,
        "legal_basis": m.sharing.legal_basis,
        "classification": d.classification,
        "tags": list(m.tags),
        "columns": [
            c.model_dump(include={"name", "type", "description", "pii", "classification"})
            for c in m.columns
        ],
        "latest_version": latest.version if latest else None,
        "freshness": freshness(d, latest, utcnow()).to_dict(),
        "access": {
            "readable": a.readable,
            "via": a.via,
            "columns": list(a.columns),
            "masked": dict(a.masked),
            "row_filters": [{k: list(v) for k, v in f.items()} for f in a.row_filters]
            if a.row_filters is not None
            else None,
            "grants": list(a.grants),
            "reason": a.reason,
        },
    }


@router.get("/v1/catalog", response_model=list[CatalogEntry], summary="Search the catalog")
def search_catalog(
    hub: HubDep,
    principal: PrincipalDep,
    q: Annotated[str | None, Query(description="keywords (all must match; Chinese works)")] = None,
    agency: str | None = None,
    tag: str | None = None,
    sharing: str | None = None,
    classification: str | None = None,
    stale: Annotated[bool | None, Query(description="only stale (true) or fresh (false)")] = None,
    readable: Annotated[bool | None, Query(description="only what you may read")] = None,
) -> list[dict[str, Any]]:
    """Every registered dataset is listed (the resource directory is public to registered
    agencies, 不予共享 ones included, with their legal basis); `access` says what the
    caller may read of it."""
    latest = hub.store.latest_versions()
    found = search(
        hub.store.list_datasets(),
        q=q,
        agency=agency,
        tag=tag,
        sharing=sharing,
        classification=classification,
    )
    out = []
    for d in found:
        e = _entry(hub, principal, d, latest.get(d.id))
        if stale is not None and e["freshness"]["stale"] is not stale:
            continue
        if readable is not None and e["access"]["readable"] is not readable:
            continue
        out.append(e)
    return out


@router.get(
    "/v1/catalog/{dataset_id}", response_model=CatalogEntry, summary="A dataset's catalog entry"
)
def catalog_entry(dataset_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    d = hub.store.get_dataset(dataset_id)
    versions = hub.store.versions(dataset_id)
    return _entry(hub, principal, d, versions[-1] if versions else None)


async def _manifest_from(request: Request) -> Manifest:
    body = await request.body()
    if len(body) > MAX_MANIFEST_BYTES:
        raise InvalidRequest("manifest is larger than 1 MB", field="(body)")
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(
            "<request>", [{"field": "(body)", "message": "must be UTF-8 text"}]
        ) from None
    try:
        data = json.loads(text) if ctype == "application/json" else _load_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ManifestError(
            "<request>",
            [
                {
                    "field": "(body)",
                    "message": f"not valid {'JSON' if 'json' in ctype else 'YAML'}: {e}",
                }
            ],
        ) from None
    return parse_manifest(data, file="<request>")


MAX_MANIFEST_DEPTH = 32


class _ManifestLoader(yaml.SafeLoader):
    """YAML of a manifest from a client: no aliases (``*a`` makes a few bytes stand for
    an exponentially large document), no nesting past :data:`MAX_MANIFEST_DEPTH` (the
    composer recurses per level), no text a database or an encoder cannot take."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases are not allowed", mark)
        self._depth += 1
        try:
            if self._depth > MAX_MANIFEST_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_MANIFEST_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_scalar(self, node: Any) -> Any:
        value = super().construct_scalar(node)
        if isinstance(value, str) and _unstorable(value):
            raise yaml.constructor.ConstructorError(
                None, None, "NUL characters and lone surrogates are not allowed", node.start_mark
            )
        return value


def _unstorable(text: str) -> bool:
    """NUL (PostgreSQL cannot store it) or a lone surrogate (no UTF-8 encoder can write it)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _load_yaml(text: str) -> Any:
    loader = _ManifestLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


_MANIFEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "the dataset manifest (docs/manifest.md), as YAML or JSON",
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


def _register(hub: Hub, principal: Principal, m: Manifest, *, create: bool) -> dict[str, Any]:
    if not can_manage(principal, m.agency):
        raise AccessDenied(
            f"only a steward of {m.agency!r} (or an admin) may register its datasets",
            agency=m.agency,
        )
    exists = m.id in {d.id for d in hub.store.list_datasets()}
    if create and exists:
        raise Conflict(f"dataset {m.id!r} exists; PUT /v1/datasets/{m.id} to update", dataset=m.id)
    if exists:
        current = hub.store.get_dataset(m.id)
        if not can_manage(principal, current.agency_id):
            raise AccessDenied(f"only a steward of {current.agency_id!r} may update {m.id!r}")
    record = hub.register(m, file="<request>", by=principal)
    return {
        "id": record.id,
        "agency": record.agency_id,
        "created": not exists,
        "updated_at": record.updated_at,
    }


@router.post(
    "/v1/datasets",
    response_model=RegisterOut,
    status_code=201,
    summary="Register a dataset from its manifest (steward of the owning agency)",
    openapi_extra=_MANIFEST_BODY,
    responses={
        201: links(
            Describe=("GET", "/v1/datasets/{dataset_id}", {"dataset_id": "$response.body#/id"}),
            Entry=("GET", "/v1/catalog/{dataset_id}", {"dataset_id": "$response.body#/id"}),
        )
    },
)
async def register_dataset(
    request: Request, hub: HubDep, principal: PrincipalDep
) -> dict[str, Any]:
    m = await _manifest_from(request)
    return await run_in_threadpool(_register, hub, principal, m, create=True)


@router.put(
    "/v1/datasets/{dataset_id}",
    response_model=RegisterOut,
    summary="Update a dataset's manifest (steward of the owning agency)",
    openapi_extra=_MANIFEST_BODY,
)
async def update_dataset(
    dataset_id: str, request: Request, hub: HubDep, principal: PrincipalDep
) -> dict[str, Any]:
    m = await _manifest_from(request)
    if m.id != dataset_id:
        raise InvalidRequest(
            f"manifest id {m.id!r} does not match the URL's {dataset_id!r}", field="id"
        )
    hub.store.get_dataset(dataset_id)
    return await run_in_threadpool(_register, hub, principal, m, create=False)


@router.get(
    "/v1/datasets/{dataset_id}/lineage",
    response_model=LineageOut,
    summary="Where a dataset comes from, which queries derive from it, who consumes it",
)
def lineage(dataset_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    """Upstream: the manifest's source connector.  Derived queries and consumers come
    from the audit log; consumers are shown to the owning agency's stewards and admins
    only (who reads what is the owner's business)."""
    d = hub.store.get_dataset(dataset_id)
    if not hub.exchange.access(principal, dataset_id).readable:
        raise AccessDenied(f"you may not read dataset {dataset_id!r}", dataset=dataset_id)
    entries = hub.audit.entries(dataset=dataset_id, limit=200)
    owner_view = can_manage(principal, d.agency_id)
    derived = [
        {
            "sql_fingerprint": e.sql_fingerprint or "",
            "principal": e.principal,
            "agency": e.agency,
            "action": e.action,
            "reads_with": sorted(x for x in e.datasets if x != dataset_id),
            "at": e.at,
            "row_count": e.row_count,
        }
        for e in entries
        if e.outcome == "ok"
        and e.sql_fingerprint
        and (owner_view or e.agency == principal.agency_id)
    ]
    src = d.manifest.source
    return {
        "dataset": dataset_id,
        "source": {"connector": src.connector, "mode": src.mode},
        "derived_queries": derived[:50],
        "consumers": hub.audit.consumers(dataset_id) if owner_view else [],
    }
