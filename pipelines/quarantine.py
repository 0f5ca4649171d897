"""A steward's actions on quarantined rows: look at them, re-release them, discard them.

``release`` re-validates a held batch against the dataset's *current* suite (the rule or
the data may have been fixed since), publishes the rows that now pass as a new version
and keeps the rest held in a new batch that points back to the old one.  ``discard``
drops a held batch for good (its file is deleted: it holds personal data).  Both are
recorded in the catalog with who did it and how many rows went where.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from catalog.access.disclosure import disclose_record
from catalog.access.effective import Access
from catalog.datasets.manifest import Manifest
from catalog.datasets.quality import QualityStore, QuarantineAction, QuarantineBatch
from catalog.datasets.store import CatalogStore
from catalog.errors import CommitUnsettled, Conflict, unavailable
from catalog.lake.tables import Lake
from connectors.incremental import greater
from eventlog.message import Publisher
from expectations.runner import FAILED, ROW_ID, BatchValidator
from expectations.sql import ident, literal
from expectations.suite import load_suite
from pipelines.notify import announce, version_event
from pipelines.quality import quarantine_dir


@dataclass(frozen=True)
class ReleaseOutcome:
    batch: str
    run_id: str
    rows_published: int
    rows_held: int
    version: int | None
    new_batch: str | None


def _held(qstore: QualityStore, batch_id: str, dataset_id: str) -> QuarantineBatch:
    batch = qstore.get_batch(batch_id, dataset_id)
    if batch.status != "held":
        raise Conflict(f"quarantine batch {batch_id} is {batch.status}, not held", batch=batch_id)
    return batch


def quarantine_rows(
    batch: QuarantineBatch, access: Access, *, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """Rows of a batch with their row id and failed rules, as ``access`` (the viewer's
    access to the dataset) shows them: the owner's stewards see them as they came in,
    anyone else (an admin) with personal data masked and only the columns it may see —
    by the same rule as every other outbound path (catalog/access/disclosure.py)."""
    if not Path(batch.path).exists():
        return []
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        rel = con.execute(
            f"SELECT * FROM read_parquet({literal(batch.path)}) ORDER BY {ident(ROW_ID)} "
            f"LIMIT {int(limit)} OFFSET {int(offset)}"
        ).to_arrow_table()
    finally:
        con.close()
    out = []
    for row in rel.to_pylist():
        meta = {k: row.pop(k) for k in (ROW_ID, FAILED) if k in row}
        shown = disclose_record(access, row)
        if shown is not None:
            out.append({**meta, **shown})
    return out


def release(
    batch_id: str,
    manifest: Manifest,
    *,
    store: CatalogStore,
    lake: Lake,
    publisher: Publisher | None,
    principal: str,
    suites_dir: Path | None = None,
    force: bool = False,
    note: str | None = None,
) -> ReleaseOutcome:
    """Re-validate a held batch and publish what passes (everything with ``force``)."""
    qstore = store.quality
    batch = _held(qstore, batch_id, manifest.id)
    run = store.start_run(manifest.id, f"release:{principal}")
    suite = load_suite(manifest.expectations or "", suites_dir) if manifest.expectations else None
    new_batch: str | None = None
    held = 0
    version = None
    with BatchValidator(
        [batch.path],
        suite if suite is not None else _empty_suite(),
        pii=manifest.personal_columns,
        key_columns=manifest.primary_key,
    ) as validator:
        validation = validator.validate()
        if force:
            validator.validation = _forced(validation)
        files = lake.stage(
            manifest.id, run.id, validator.passing(), lake.table(manifest.id).schema().as_arrow()
        )
        published = sum(f.rows for f in files)
        if not force and validation.failing_rows:
            new_batch = str(uuid.uuid4())
            path = quarantine_dir(lake, manifest.id) / f"{run.id}-{new_batch[:8]}.parquet"
            held = validator.write_quarantine(path, whole_batch=False)
            qstore.add_batch(
                batch_id=new_batch,
                dataset_id=manifest.id,
                run_id=run.id,
                path=str(path),
                rows=held,
                policy=batch.policy,
                failed=validation.failed,
                previous_cursor=batch.previous_cursor,
                cursor=batch.cursor,
                origin=batch.id,
            )
    result = qstore.record_result(
        run_id=run.id,
        dataset_id=manifest.id,
        suite=suite.name if suite else "",
        policy="release",
        status="passed" if validation.success or force else "dropped",
        rows_checked=validation.rows,
        rows_quarantined=held,
        rows_unexpected=validation.unexpected_rows,
        seconds=validation.seconds,
        document=validation.document(),
        quarantine_batch=new_batch,
    )
    if files:
        current = lake.current(manifest.id)
        cursor = current.cursor if current else None
        # A blocked batch never moved the cursor; publishing it moves the cursor past it.
        if batch.policy == "block" and (cursor is None or greater(batch.cursor, cursor)):
            cursor = batch.cursor
        snap = lake.commit(
            manifest.id,
            files,
            mode="merge" if manifest.source.mode == "merge" else "append",
            cursor=cursor,
            run_id=run.id,
            key=manifest.primary_key or None,
        )
        quality = {**result.summary(), "released_from": batch.id}
        try:
            v = store.record_version(
                manifest.id,
                snapshot_id=snap.snapshot_id,
                metadata_location=snap.metadata_location,
                rows_added=published,
                total_rows=snap.total_rows,
                run_id=run.id,
                cursor=snap.cursor,
                committed_at=snap.committed_at,
                events=lambda v: [version_event(v, manifest, quality=quality)],
            )
        except Exception as e:
            if unavailable(e) is None:
                raise
            store.expire_lease(run.id)  # the next reconcile records the committed version
            raise CommitUnsettled(manifest.id, run.id) from e
        version = v.version
    store.finish_run(
        run.id,
        "succeeded" if files else "unchanged",
        rows_read=batch.rows,
        rows_written=published,
        version=version,
    )
    qstore.record_action(
        batch,
        action="release",
        principal=principal,
        status="released",
        rows_published=published,
        rows_held=held,
        version=version,
        new_batch=new_batch,
        note=note or ("forced: published without re-validation" if force else None),
    )
    announce(store, publisher)
    return ReleaseOutcome(batch.id, run.id, published, held, version, new_batch)


def discard(
    batch_id: str,
    manifest: Manifest,
    *,
    store: CatalogStore,
    principal: str,
    note: str | None = None,
) -> QuarantineAction:
    """Drop a held batch for good; the action and its row count are recorded."""
    qstore = store.quality
    batch = _held(qstore, batch_id, manifest.id)
    action = qstore.record_action(
        batch,
        action="discard",
        principal=principal,
        status="discarded",
        rows_discarded=batch.rows,
        note=note,
    )
    Path(batch.path).unlink(missing_ok=True)
    return action


def _empty_suite() -> Any:
    from expectations.suite import Suite

    return Suite(name="", path=Path(), checks=[], document={})


def _forced(validation: Any) -> Any:
    from dataclasses import replace

    return replace(validation, failed_mask=0, failing_rows=0)
