"""Datasets: list, describe, versions, runs, and trigger an ingest."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from catalog.access.disclosure import disclose_run, disclose_version
from catalog.access.effective import Access
from catalog.access.policy import can_manage
from catalog.datasets.store import DatasetRecord, Run, Version
from catalog.errors import AccessDenied, NotFound
from catalog.identity.store import Principal
from hub.api.common.deps import HubDep, PrincipalDep
from hub.api.common.errors import error_responses
from hub.api.common.links import links
from hub.assembly.context import Hub

router = APIRouter(
    prefix="/v1/datasets", tags=["datasets"], responses=error_responses(401, 403, 404, 422)
)


class VersionOut(BaseModel):
    dataset: str
    version: int
    snapshot_id: str
    rows_added: int | None = Field(description="null: withheld (your grant filters rows)")
    total_rows: int | None = Field(description="null: withheld (your grant filters rows)")
    run_id: str | None
    cursor: Any
    committed_at: datetime
    withheld: list[str] | None = None

    @classmethod
    def of(cls, v: Version, access: Access) -> VersionOut:
        return cls.model_validate(disclose_version(access, v.to_dict()))


class RunOut(BaseModel):
    id: str
    dataset: str
    trigger: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    rows_read: int | None
    rows_written: int | None
    bytes_written: int | None
    version: int | None
    error: str | None
    details: dict[str, Any] = {}
    withheld: list[str] | None = None

    @classmethod
    def of(cls, r: Run, access: Access | None = None) -> RunOut:
        """``access``: the reader's (None: the caller may manage the dataset)."""
        d = r.to_dict()
        return cls.model_validate(disclose_run(access, d) if access is not None else d)


class ColumnOut(BaseModel):
    name: str
    type: str
    description: str
    pii: str | None
    classification: str | None


class DatasetSummary(BaseModel):
    id: str
    title: str
    agency: str
    sharing: str
    classification: str
    tags: list[str]
    latest_version: int | None


class DatasetDetail(DatasetSummary):
    description: str
    steward: dict[str, Any]
    columns: list[ColumnOut]
    primary_key: list[str]
    block_keys: list[dict[str, str]]
    schedule: str | None
    update_frequency: str | None
    source_connector: str
    sync_mode: str
    versions: list[VersionOut]
    runs: list[RunOut]


def _summary(d: DatasetRecord, latest: Version | None) -> dict[str, Any]:
    return {
        "id": d.id,
        "title": d.title,
        "agency": d.agency_id,
        "sharing": d.sharing,
        "classification": d.classification,
        "tags": list(d.manifest.tags),
        "latest_version": latest.version if latest else None,
    }


def _readable(hub: Hub, principal: Principal, dataset_id: str) -> tuple[DatasetRecord, Access]:
    record, access = hub.exchange.record_access(principal, dataset_id)
    if not access.readable:
        raise AccessDenied(f"you may not read dataset {dataset_id!r}", dataset=dataset_id)
    return record, access


_DATASET = "/v1/datasets/{dataset_id}"
_FIRST = {"dataset_id": "$response.body#/0/id"}


@router.get(
    "",
    response_model=list[DatasetSummary],
    summary="Datasets you may read",
    responses={
        200: links(
            Describe=("GET", _DATASET, _FIRST),
            Versions=("GET", _DATASET + "/versions", _FIRST),
            Rows=("GET", _DATASET + "/rows", _FIRST),
            Sample=("GET", _DATASET + "/sample", _FIRST),
            Quality=("GET", _DATASET + "/quality", _FIRST),
        )
    },
)
def list_datasets(hub: HubDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    latest = hub.store.latest_versions()
    readable = hub.exchange.readable(principal)
    return [_summary(d, latest.get(d.id)) for d in hub.store.list_datasets() if d.id in readable]


@router.get("/{dataset_id}", response_model=DatasetDetail, summary="Describe a dataset")
def describe_dataset(dataset_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    d, access = _readable(hub, principal, dataset_id)
    m = d.manifest
    versions = hub.store.versions(d.id)
    return {
        **_summary(d, versions[-1] if versions else None),
        "description": m.description,
        "steward": m.steward.model_dump(exclude_none=True),
        "columns": [
            c.model_dump(include={"name", "type", "description", "pii", "classification"})
            for c in m.columns
        ],
        "primary_key": m.primary_key,
        "block_keys": [b.model_dump() for b in m.block_keys],
        "schedule": m.schedule,
        "update_frequency": m.update_frequency,
        "source_connector": m.source.connector,
        "sync_mode": m.source.mode,
        "versions": [VersionOut.of(v, access) for v in versions[-20:]],
        "runs": [RunOut.of(r, access) for r in hub.store.list_runs(d.id, limit=10)],
    }


@router.get("/{dataset_id}/versions", response_model=list[VersionOut], summary="Published versions")
def list_versions(dataset_id: str, hub: HubDep, principal: PrincipalDep) -> list[VersionOut]:
    _, access = _readable(hub, principal, dataset_id)
    return [VersionOut.of(v, access) for v in hub.store.versions(dataset_id)]


@router.get("/{dataset_id}/runs", response_model=list[RunOut], summary="Ingest runs, newest first")
def list_runs(
    dataset_id: str,
    hub: HubDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[RunOut]:
    _, access = _readable(hub, principal, dataset_id)
    runs = hub.store.list_runs(dataset_id, limit=limit)
    return [RunOut.of(r, access) for r in runs]


@router.post(
    "/{dataset_id}/ingest",
    response_model=RunOut,
    summary="Run an ingest now (steward of the owning agency, or admin)",
    responses={200: links(GetRun=("GET", "/v1/runs/{run_id}", {"run_id": "$response.body#/id"}))},
)
async def ingest_now(dataset_id: str, hub: HubDep, principal: PrincipalDep) -> RunOut:
    record = hub.store.get_dataset(dataset_id)
    if not can_manage(principal, record.agency_id):
        raise AccessDenied(
            f"only a steward of {record.agency_id!r} may run ingests of {dataset_id!r}",
            dataset=dataset_id,
        )
    run = await run_in_threadpool(hub.ingest, dataset_id, trigger=f"api:{principal.id}")
    return RunOut.of(run)


runs_router = APIRouter(
    prefix="/v1/runs", tags=["datasets"], responses=error_responses(401, 404, 422)
)


@runs_router.get("/{run_id}", response_model=RunOut, summary="One ingest run")
def get_run(run_id: str, hub: HubDep, principal: PrincipalDep) -> RunOut:
    run = hub.store.get_run(run_id)
    access = hub.exchange.access(principal, run.dataset_id)
    if not access.readable:
        raise NotFound(f"no run {run_id!r}", run=run_id)
    return RunOut.of(run, access)
