"""The quality gate between extract and publish: validate, quarantine, record, announce.

``gate`` takes what ``extract`` staged and returns what ``publish`` should commit:

- the suite passes (or there is none): the staged files, unchanged;
- ``warn``: the staged files, flagged (status ``warned``, a ``quality.failed`` event);
- ``drop-rows``: the rows that broke a failed expectation go to a quarantine file; the
  staged files are published with Iceberg position-delete files that leave those rows
  out (catalog.lake.deletes), so the passing rows are not written again;
- ``block``: the whole batch goes to quarantine and nothing is published; the table
  stays at its last good version and its cursor does not move.

Every run's result (each expectation, observed value, unexpected count, a masked sample)
is stored in the catalog (:class:`catalog.datasets.quality.QualityStore`).  Quarantine files live
next to the table's data, under ``<table>/quarantine/``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from catalog.datasets.manifest import Manifest
from catalog.datasets.quality import QualityResult, QualityStore
from catalog.datasets.store import CatalogStore
from catalog.domain.channels import dataset_channel
from catalog.errors import SuiteInvalid
from catalog.lake.tables import Lake, StagedFile
from catalog.outbox import Event
from catalog.vocabulary import GateStatus
from eventlog.message import Publisher
from expectations.runner import BatchValidator, Validation
from expectations.suite import load_suite
from pipelines.notify import announce
from pipelines.staged import GateOutcome, Staged

log = logging.getLogger(__name__)


def local_path(location: str) -> Path:
    """A staged file or table location as a local path (the gate reads with DuckDB)."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else location)
    raise SuiteInvalid(
        f"the quality gate reads staged files from a local warehouse; {location!r} is not local",
        location=location,
    )


def quarantine_dir(lake: Lake, dataset_id: str) -> Path:
    return local_path(lake.table(dataset_id).location()) / "quarantine"


_FAILED: dict[str, GateStatus] = {"warn": "warned", "drop-rows": "dropped", "block": "blocked"}
"""The gate's status for a failed validation, by the manifest's policy."""


def _status(policy: str, validation: Validation) -> GateStatus:
    return "passed" if validation.success else _FAILED[policy]


def gate(
    staged: Staged,
    manifest: Manifest,
    *,
    lake: Lake,
    store: CatalogStore,
    publisher: Publisher | None = None,
    suites_dir: Path | None = None,
    quality: QualityStore | None = None,
) -> Staged:
    """Validate a staged batch against the dataset's suite and apply its policy.  A failed
    validation is announced (``quality.failed``) through the catalog's outbox; with a
    ``publisher`` the outbox is drained at once (the ingest run drains after its commit)."""
    if manifest.expectations is None or not staged.files:
        return staged
    qstore = quality or store.quality
    suite = load_suite(manifest.expectations, suites_dir)
    policy = manifest.quality.policy
    files = [str(local_path(f.path)) for f in staged.files]
    with BatchValidator(
        files, suite, pii=manifest.personal_columns, key_columns=manifest.primary_key
    ) as validator:
        validation = validator.validate()
        status = _status(policy, validation)
        batch_id: str | None = None
        quarantined = 0
        result_files = staged.files
        if status in ("dropped", "blocked"):
            batch_id = str(uuid.uuid4())
            path = quarantine_dir(lake, manifest.id) / f"{staged.run_id}-{batch_id[:8]}.parquet"
            if status == "dropped":
                # The failing rows to a quarantine file; the staged files are published as
                # they are, with Iceberg position-delete files leaving those rows out (D31).
                quarantined = validator.write_quarantine(path, whole_batch=False)
                # A file none of whose rows passed is not published at all.
                kept: list[tuple[StagedFile, np.ndarray]] = []
                dropped: list[StagedFile] = []
                for f, p in zip(staged.files, validator.failing_positions(), strict=True):
                    if len(p) == f.rows:
                        dropped.append(f)
                    else:
                        kept.append((f, p))
                result_files = [f for f, _ in kept] + lake.stage_deletes(
                    manifest.id, staged.run_id, [f for f, _ in kept], [p for _, p in kept]
                )
                lake.discard(dropped)
            else:
                quarantined = validator.write_quarantine(path, whole_batch=True)
                result_files = []
            _supersede(qstore, manifest.id, staged.previous_cursor)
            qstore.add_batch(
                batch_id=batch_id,
                dataset_id=manifest.id,
                run_id=staged.run_id,
                path=str(path),
                rows=quarantined,
                policy=policy,
                failed=validation.failed,
                previous_cursor=staged.previous_cursor,
                cursor=staged.cursor,
            )
    if status == "blocked":
        lake.discard(staged.files)

    def failed(result: QualityResult) -> list[Event]:
        """``quality.failed``, in the outbox with the result it reports (catalog/outbox.py)."""
        if validation.success:
            return []
        return [
            Event(
                dataset_channel(manifest.id),
                "quality.failed",
                {"dataset": manifest.id, **result.summary()},
                {"agency": manifest.agency, "dataset": manifest.id},
            )
        ]

    result = qstore.record_result(
        run_id=staged.run_id,
        dataset_id=manifest.id,
        suite=suite.name,
        policy=policy,
        status=status,
        rows_checked=validation.rows,
        rows_quarantined=quarantined,
        rows_unexpected=validation.unexpected_rows,
        seconds=validation.seconds,
        document=validation.document(),
        quarantine_batch=batch_id,
        events=failed,
    )
    summary = result.summary()
    if not validation.success:
        log.warning(
            "quality gate of %s (%s): %s, %d row(s) quarantined",
            manifest.id,
            policy,
            ", ".join(validation.failed),
            quarantined,
        )
    announce(store, publisher)
    return replace(
        staged,
        files=result_files,
        bytes_written=sum(f.bytes for f in result_files),
        quality=GateOutcome(status, summary),
    )


def _supersede(qstore: QualityStore, dataset_id: str, previous_cursor: Any) -> None:
    """A batch re-read from the same cursor replaces the one quarantined before it.

    Under ``block`` (or when no row passed) the cursor does not move, so the next run
    reads the same source rows again; the older copy is marked superseded so that each
    source row is held once.
    """
    for b in qstore.batches(dataset_id, status="held"):
        if b.previous_cursor == previous_cursor and b.origin is None:
            qstore.set_batch_status(b.id, "superseded")
