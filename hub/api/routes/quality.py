"""Quality: validation results, the report page, freshness, and the quarantine."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from catalog.access.disclosure import disclose_quality_results, quality_visible
from catalog.access.effective import Access
from catalog.access.policy import can_manage
from catalog.datasets.quality import QualityResult, QualityStore
from catalog.datasets.store import DatasetRecord
from catalog.errors import AccessDenied, NotFound
from catalog.identity.store import Principal
from hub.api.common.deps import HubDep, PrincipalDep
from hub.api.common.errors import error_responses, json_error_content
from hub.api.common.limits import MAX_INT
from hub.assembly.context import Hub
from hub.live.channels import audit_unmasked
from hub.quality_report import render_report
from pipelines.freshness import freshness
from pipelines.quarantine import discard, quarantine_rows, release

router = APIRouter(
    prefix="/v1/datasets", tags=["quality"], responses=error_responses(400, 401, 403, 404, 409, 422)
)


def _readable(hub: Hub, principal: Principal, dataset_id: str) -> tuple[DatasetRecord, Access]:
    """The dataset and the caller's access, for quality results: they count and sample
    rows of whole batches, so they are for readers of every row (the owner, or a reader
    without a row filter); sample values then go out as that reader sees them."""
    record, access = hub.exchange.record_access(principal, dataset_id)
    if not access.readable:
        raise AccessDenied(f"you may not read dataset {dataset_id!r}", dataset=dataset_id)
    if not quality_visible(access):
        raise AccessDenied(
            f"quality results of {dataset_id!r} count rows outside your grant's row filter",
            dataset=dataset_id,
        )
    return record, access


def _shown(record: DatasetRecord, access: Access, result: QualityResult) -> QualityResult:
    """A result with its samples as this reader may see them."""
    results = disclose_quality_results(
        access, result.document.get("results", []), record.manifest.primary_key
    )
    return replace(result, document={**result.document, "results": results})


def _managed(hub: Hub, principal: Principal, dataset_id: str) -> DatasetRecord:
    record = hub.store.get_dataset(dataset_id)
    if not can_manage(principal, record.agency_id):
        raise AccessDenied(
            f"only a steward of {record.agency_id!r} may handle the quarantine of {dataset_id!r}",
            dataset=dataset_id,
        )
    return record


def _quality(hub: Hub) -> QualityStore:
    return hub.store.quality


def _freshness(hub: Hub, record: DatasetRecord) -> Any:
    latest = hub.store.latest_versions().get(record.id)
    return freshness(record, latest)


@router.get("/{dataset_id}/quality", summary="Quality results of recent runs and freshness")
def get_quality(
    dataset_id: str,
    hub: HubDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> dict[str, Any]:
    record, access = _readable(hub, principal, dataset_id)
    found = _quality(hub).results(dataset_id, limit=limit)
    results = [_shown(record, access, r) for r in found]
    return {
        "dataset": dataset_id,
        "suite": record.manifest.expectations,
        "policy": record.manifest.quality.policy,
        "freshness": _freshness(hub, record).to_dict(),
        "latest": results[0].to_dict() if results else None,
        "history": [r.summary() for r in results],
    }


@router.get(
    "/{dataset_id}/quality/report",
    response_class=HTMLResponse,
    responses=json_error_content(400, 401, 403, 404, 409, 422),
    summary="The latest (or a given run's) validation as a readable page",
)
def quality_report(
    dataset_id: str, hub: HubDep, principal: PrincipalDep, run: str | None = None
) -> HTMLResponse:
    record, access = _readable(hub, principal, dataset_id)
    q = _quality(hub)
    result: QualityResult | None
    if run:
        result = q.get_result(run)
        if result.dataset_id != dataset_id:
            raise NotFound(f"no quality result for run {run!r} of {dataset_id!r}", run=run)
    else:
        latest = q.results(dataset_id, limit=1)
        result = latest[0] if latest else None
    shown = _shown(record, access, result) if result is not None else None
    page = render_report(dataset_id, record.title, shown, _freshness(hub, record))
    return HTMLResponse(page)


@router.get("/{dataset_id}/quarantine", summary="Quarantine batches and the actions taken")
def list_quarantine(
    dataset_id: str, hub: HubDep, principal: PrincipalDep, status: str | None = None
) -> dict[str, Any]:
    _managed(hub, principal, dataset_id)
    q = _quality(hub)
    return {
        "dataset": dataset_id,
        "batches": [b.to_dict() for b in q.batches(dataset_id, status=status)],
        "actions": [a.to_dict() for a in q.actions(dataset_id)],
    }


@router.get(
    "/{dataset_id}/quarantine/{batch_id}/rows",
    summary="Quarantined rows: row id, failed expectations, values (personal data masked)",
)
def quarantine_batch_rows(
    dataset_id: str,
    batch_id: str,
    hub: HubDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
) -> dict[str, Any]:
    record = _managed(hub, principal, dataset_id)
    batch = _quality(hub).get_batch(batch_id, dataset_id)
    access = hub.exchange.access(principal, record.id)
    rows = quarantine_rows(batch, access, limit=limit, offset=offset)
    if rows:
        audit_unmasked(hub, principal, record, access, f"quarantine:{batch_id}")
    return {"batch": batch.to_dict(), "rows": rows}


class ReleaseIn(BaseModel):
    force: bool = Field(default=False, description="publish without re-validating")
    note: str | None = None


class DiscardIn(BaseModel):
    note: str | None = None


@router.post(
    "/{dataset_id}/quarantine/{batch_id}/release",
    summary="Re-validate a held batch against the current suite and publish what passes",
)
async def release_batch(
    dataset_id: str, batch_id: str, body: ReleaseIn, hub: HubDep, principal: PrincipalDep
) -> dict[str, Any]:
    record = _managed(hub, principal, dataset_id)
    outcome = await run_in_threadpool(
        lambda: release(
            batch_id,
            record.manifest,
            store=hub.store,
            lake=hub.lake,
            publisher=hub.bus.publish,
            principal=principal.id,
            suites_dir=hub.settings.suites,
            force=body.force,
            note=body.note,
        )
    )
    return {
        "batch": outcome.batch,
        "run_id": outcome.run_id,
        "rows_published": outcome.rows_published,
        "rows_held": outcome.rows_held,
        "version": outcome.version,
        "new_batch": outcome.new_batch,
    }


@router.post("/{dataset_id}/quarantine/{batch_id}/discard", summary="Discard a held batch")
def discard_batch(
    dataset_id: str, batch_id: str, body: DiscardIn, hub: HubDep, principal: PrincipalDep
) -> dict[str, Any]:
    record = _managed(hub, principal, dataset_id)
    action = discard(
        batch_id, record.manifest, store=hub.store, principal=principal.id, note=body.note
    )
    return action.to_dict()
