"""The ingest flow: extract → publish → notify, as plain functions.

The embedded runner (:func:`run_ingest`) and the Airflow DAG call the same three
steps.  A run is a transaction: ``extract`` only stages files; ``publish`` makes
them visible in one Iceberg commit that also carries the new cursor; the cursor
of the next run is read back from the table's current snapshot, so a crash at
any point leaves the last good version readable and the next run resumes
without loss or duplicates.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from catalog.datasets.manifest import Manifest
from catalog.datasets.store import CatalogStore, Run, Version
from catalog.errors import (
    CommitUnsettled,
    ConnectorError,
    HubError,
    SchemaDrift,
    SourceRefused,
    unavailable,
)
from catalog.lake.tables import Lake
from catalog.sources.guard import ResolvedSource, SourceGuard
from catalog.vocabulary import RunStatus
from connectors.base import Connector, get_connector
from connectors.incremental import Incremental
from eventlog.message import Publisher
from pipelines.blockkeys import BlockKeyStep
from pipelines.notify import announce, version_event
from pipelines.quality import gate
from pipelines.staged import Staged

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]


def target_schema(manifest: Manifest, source: pa.Schema) -> pa.Schema:
    """The lake schema for a source: the manifest's columns, plus new source columns
    when the schema policy is ``evolve``.  A missing declared column, or a new one
    under ``freeze``, is a :class:`SchemaDrift` that lists the difference."""
    declared = manifest.arrow_schema
    missing = [n for n in declared.names if n not in source.names]
    extra = [f for f in source if f.name not in declared.names]
    if missing:
        raise SchemaDrift(
            f"dataset {manifest.id!r}: source lacks declared column(s) {', '.join(missing)}",
            dataset=manifest.id,
            missing=missing,
        )
    if extra and manifest.source.schema_policy == "freeze":
        raise SchemaDrift(
            f"dataset {manifest.id!r}: source has undeclared column(s) "
            f"{', '.join(f.name for f in extra)} and schema_policy is 'freeze'",
            dataset=manifest.id,
            added=[f"{f.name}: {f.type}" for f in extra],
        )
    evolved = [pa.field(f.name, _lake_type(f.type)) for f in extra]
    return pa.schema([*declared, *evolved])


def _lake_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    return t


def _conform(dataset: str, batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    cols = []
    for f in schema:
        col = batch.column(batch.schema.get_field_index(f.name))
        try:
            cols.append(col.cast(f.type) if col.type != f.type else col)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise SchemaDrift(
                f"dataset {dataset!r}: column {f.name!r} of type {col.type} cannot be read as "
                f"{f.type}: {e}",
                dataset=dataset,
                column=f.name,
            ) from None
        if not f.nullable and col.null_count:
            raise SchemaDrift(
                f"dataset {dataset!r}: key column {f.name!r} has {col.null_count} null value(s)",
                dataset=dataset,
                column=f.name,
            )
    return pa.RecordBatch.from_arrays(cols, schema=schema)


def extract(
    manifest: Manifest,
    *,
    lake: Lake,
    run_id: str,
    guard: SourceGuard | None = None,
    trigger: str | None = None,
    progress: ProgressFn | None = None,
    connector: Connector | None = None,
    resolved: ResolvedSource | None = None,
) -> Staged:
    """Read the source past the table's cursor and stage the rows as Parquet files.

    The source is resolved through ``guard`` (the agency's roots and profiles) unless a
    ``connector`` is given; every read resolved here, and every refusal, goes on the
    audit chain (``source.read``) with the run."""
    if connector is None:
        if guard is None:
            raise SourceRefused(
                f"<dataset {manifest.id}>",
                [
                    {
                        "field": "source",
                        "message": "no source guard: the hub reads no source "
                        "without the agency's roots and profiles",
                    }
                ],
            )
        try:
            connector, resolved = make_connector(manifest, guard)
        except SourceRefused as e:
            guard.record(
                manifest, None, outcome="denied", run_id=run_id, trigger=trigger, reason=e.message
            )
            raise
    if guard is not None and resolved is not None:
        guard.record(manifest, resolved, run_id=run_id, trigger=trigger)
    try:
        return _extract(manifest, lake=lake, run_id=run_id, progress=progress, connector=connector)
    except SourceRefused as e:  # a file the connector met at read time was refused
        refused = SourceRefused(f"<dataset {manifest.id}>", e.problems)
        if guard is not None:
            guard.record(
                manifest,
                resolved,
                outcome="denied",
                run_id=run_id,
                trigger=trigger,
                reason=refused.message,
            )
        raise refused from None


def _extract(
    manifest: Manifest,
    *,
    lake: Lake,
    run_id: str,
    progress: ProgressFn | None,
    connector: Connector,
) -> Staged:
    started = time.perf_counter()
    src = manifest.source
    renames = {c.source_name: c.name for c in manifest.columns if c.source_name}
    with connector:
        connector.declare({c.name: c.arrow_type for c in manifest.columns}, renames)
        schema = target_schema(manifest, _renamed_schema(connector.discover(), renames))
        keys = BlockKeyStep(manifest)
        lake_schema = keys.schema(schema)
        lake.ensure_table(
            manifest.id,
            lake_schema,
            identifier_fields=manifest.primary_key or None,
            policy=src.schema_policy,
        )
        current = lake.current(manifest.id)
        previous = current.cursor if current else None
        incremental = src.mode != "replace"
        if incremental and current is not None:
            connector.resume(current.state)
        since = previous if incremental else None
        cursor_col = src.cursor
        cursor = Incremental(cursor_col, start_value=since)
        boundary = _Boundary(manifest, lake, schema, since) if since is not None else None

        def batches() -> Iterator[pa.RecordBatch]:
            for raw in connector.read(cursor_col if since is not None else None, since):
                if raw.num_rows == 0:
                    continue
                if renames and any(n in renames for n in raw.schema.names):
                    raw = raw.rename_columns([renames.get(n, n) for n in raw.schema.names])
                batch = _conform(manifest.id, raw, schema)
                if boundary is not None:
                    batch = boundary.drop_loaded(batch)
                    if batch.num_rows == 0:
                        continue
                batch = keys.apply(batch)
                cursor.observe(batch)
                if progress is not None:
                    progress(batch.num_rows)
                yield batch

        files = lake.stage(manifest.id, run_id, batches(), lake_schema)
        state = connector.state()
    if src.mode == "merge" and files:
        files = lake.dedupe_staged(manifest.id, run_id, files, manifest.primary_key, cursor_col)
    return Staged(
        dataset_id=manifest.id,
        run_id=run_id,
        files=files,
        rows_read=cursor.rows,
        cursor=cursor.last_value,
        previous_cursor=previous,
        base_snapshot=current.snapshot_id if current is not None else None,
        seconds=time.perf_counter() - started,
        bytes_written=sum(f.bytes for f in files),
        unresolved=dict(keys.unresolved),
        regions=keys.touched(),
        state=state,
    )


def make_connector(manifest: Manifest, guard: SourceGuard) -> tuple[Connector, ResolvedSource]:
    """The connector of a manifest's source, resolved against the agency's file roots and
    connection profiles now (a root or profile changed or removed since registration
    counts): its options come from the guard, never straight from the manifest."""
    cls = get_connector(manifest.source.connector)
    resolved = guard.resolve(manifest)
    connector = cls(resolved.options)
    connector.bind(resolved)
    return connector, resolved


def _renamed_schema(schema: pa.Schema, renames: Mapping[str, str]) -> pa.Schema:
    return pa.schema([f.with_name(renames.get(f.name, f.name)) for f in schema])


class _Boundary:
    """Drops re-read rows that carry the last watermark's own cursor value.

    Incremental reads ask for ``cursor >= watermark`` so that rows committed at the
    source with exactly that value after the last run are not lost (D14); the ones
    the table already holds are recognised by the primary key (by every column
    when there is none) and dropped.
    """

    def __init__(self, manifest: Manifest, lake: Lake, schema: pa.Schema, since: Any) -> None:
        assert manifest.source.cursor is not None
        self.dataset = manifest.id
        self.lake = lake
        self.cursor = manifest.source.cursor
        self.key = list(manifest.primary_key) or list(schema.names)
        self.since = since
        self.schema = schema
        ctype = schema.field(self.cursor).type
        try:
            self.value = pa.scalar(since).cast(ctype)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            self.value = None
        self._loaded: pa.Table | None = None

    def loaded(self) -> pa.Table:
        if self._loaded is None:
            keys = self.lake.boundary_keys(self.dataset, self.cursor, self.since, self.key)
            want = pa.schema([self.schema.field(k).with_nullable(True) for k in self.key])
            self._loaded = keys.select(self.key).cast(want)
        return self._loaded

    def drop_loaded(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.value is None:
            return batch
        col = batch.column(batch.schema.get_field_index(self.cursor))
        at = pc.fill_null(pc.equal(col, self.value), False)
        if not pc.any(at).as_py():
            return batch
        loaded = self.loaded()
        if loaded.num_rows == 0:
            return batch
        edge = pa.Table.from_batches([batch.filter(at)])
        fresh = edge.join(loaded, keys=self.key, join_type="left anti")
        rest = pa.Table.from_batches([batch.filter(pc.invert(at))])
        both = pa.concat_tables([rest, fresh.select(batch.schema.names).cast(batch.schema)])
        return both.combine_chunks().to_batches()[0] if both.num_rows else batch.slice(0, 0)


def publish(
    staged: Staged, manifest: Manifest, *, lake: Lake, store: CatalogStore
) -> Version | None:
    """Commit staged files as the dataset's next version; None when there was nothing new.

    The version is recorded with its ``dataset.updated`` event in the catalog's outbox, in
    one transaction (:func:`version_event`).  Once the lake commit was attempted its
    outcome may be unknown (the lake's catalog went away mid-commit) or known only to the
    lake (the catalog went away before recording it): then :class:`CommitUnsettled` is
    raised and the staged files must be left alone — they may be the committed version.
    """
    if not staged.files and manifest.source.mode != "replace":
        return None
    snap = lake.commit(
        manifest.id,
        staged.files,
        mode=manifest.source.mode,
        cursor=staged.cursor,
        run_id=staged.run_id,
        key=manifest.primary_key or None,
        state=staged.state,
        expect_snapshot=staged.base_snapshot,
    )
    try:
        return store.record_version(
            manifest.id,
            snapshot_id=snap.snapshot_id,
            metadata_location=snap.metadata_location,
            rows_added=snap.added_rows if manifest.source.mode != "merge" else staged.rows_read,
            total_rows=snap.total_rows,
            run_id=staged.run_id,
            cursor=snap.cursor,
            committed_at=snap.committed_at,
            events=lambda v: [version_event(v, manifest, staged.regions, _summary(staged))],
        )
    except Exception as e:
        if unavailable(e) is None:
            raise
        raise CommitUnsettled(manifest.id, staged.run_id) from e


def _summary(staged: Staged) -> Mapping[str, Any] | None:
    return None if staged.quality is None else staged.quality.summary


def reconcile(
    manifest: Manifest,
    *,
    lake: Lake,
    store: CatalogStore,
    publisher: Publisher | None,
    orphan_age_s: float = 3600.0,
    now: datetime | None = None,
) -> list[Version]:
    """Bring the catalog in line with the lake after a crash.

    A run killed between its lake commit and its catalog update left a snapshot the
    catalog does not know: record it as a version, with its ``dataset.updated`` in the
    outbox (announced late rather than never).  Runs still marked running whose process
    is gone (lease expired, process no longer there: :meth:`CatalogStore.expired_runs`)
    are closed: ``succeeded`` if their commit landed, else ``interrupted``.  A run whose
    process still holds its lease is left alone, whatever it is doing.
    """
    recovered: list[Version] = []
    if lake.exists(manifest.id):
        known = {v.snapshot_id for v in store.versions(manifest.id)}
        for snap in lake.snapshots(manifest.id):
            if snap.snapshot_id in known:
                continue
            v = store.record_version(
                manifest.id,
                snapshot_id=snap.snapshot_id,
                metadata_location=snap.metadata_location,
                rows_added=snap.added_rows,
                total_rows=snap.total_rows,
                run_id=snap.run_id,
                cursor=snap.cursor,
                committed_at=snap.committed_at,
                events=lambda v: [version_event(v, manifest)],
            )
            recovered.append(v)
    expired = store.expired_runs(manifest.id, now)
    if expired:
        committed_runs = {v.run_id: v for v in store.versions(manifest.id)}
        for run in expired:
            done = committed_runs.get(run.id)
            if done is not None:
                store.finish_run(
                    run.id,
                    "succeeded",
                    rows_written=done.rows_added,
                    version=done.version,
                    details={"settled": "its process stopped after the commit"},
                )
            else:
                log.warning(
                    "run %s of %s: its process stopped before it finished; interrupted",
                    run.id,
                    manifest.id,
                )
                store.finish_run(
                    run.id,
                    "interrupted",
                    error="the process running it stopped before it finished (lease expired "
                    "or process gone); nothing of it was published",
                )
        if lake.exists(manifest.id):
            # A killed run leaves the files it had staged; old enough ones are not another
            # run's work in progress.
            lake.remove_orphans(manifest.id, older_than_s=orphan_age_s)
    announce(store, publisher)
    return recovered


def _extract_with_retries(
    manifest: Manifest,
    *,
    lake: Lake,
    run_id: str,
    guard: SourceGuard | None,
    trigger: str | None,
    progress: ProgressFn | None,
    connector: Connector | None,
    prepared: tuple[Connector, ResolvedSource] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Staged:
    """:func:`extract`, tried again ``source.retries`` times when the source fails.

    ``prepared`` is a connector already connecting (:meth:`Connector.prepare`) for the
    first attempt; the others use ``connector``, or a new one when it is None (resolved
    again: each attempt is a read, checked and on record).

    Only a :class:`ConnectorError` (source down, refused, timed out) is retried: a
    schema drift, bad data or a refused location would fail the same way again.  Each
    attempt stages from scratch; a failed attempt's files are already removed by
    ``Lake.stage``.
    """
    src = manifest.source
    delay = src.backoff_s
    for attempt in range(src.retries + 1):
        first = attempt == 0 and prepared is not None
        try:
            return extract(
                manifest,
                lake=lake,
                run_id=run_id,
                guard=guard,
                trigger=trigger,
                progress=progress,
                connector=prepared[0] if first and prepared is not None else connector,
                resolved=prepared[1] if first and prepared is not None else None,
            )
        except ConnectorError as e:
            if attempt == src.retries:
                if src.retries:
                    e.message = f"{e.message} (after {src.retries + 1} attempts)"
                raise
            log.warning(
                "ingest of %s: attempt %d failed (%s); retrying in %.1fs",
                manifest.id,
                attempt + 1,
                e.message,
                delay,
            )
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _prepare_source(
    manifest: Manifest, guard: SourceGuard | None, given: Connector | None
) -> tuple[tuple[Connector, ResolvedSource] | None, HubError | None]:
    """The run's connector, connecting in the background (:meth:`Connector.prepare`)
    while the run reconciles the catalog and reads the lake's state — a tenth of a small
    incremental run's time.  A connector that cannot be made (unknown name, missing
    option, a source the agency was not given) is an error for the recorded run, kept
    until the run exists."""
    if given is not None or guard is None:
        return None, None
    try:
        prepared = make_connector(manifest, guard)
    except HubError as e:
        return None, e
    prepared[0].prepare()
    return prepared, None


def run_ingest(
    manifest: Manifest,
    *,
    store: CatalogStore,
    lake: Lake,
    publisher: Publisher | None,
    guard: SourceGuard | None = None,
    trigger: str = "manual",
    progress: ProgressFn | None = None,
    connector: Connector | None = None,
    suites_dir: Path | None = None,
) -> Run:
    """One whole ingest run of a dataset, recorded in the catalog.  Never raises for a
    source or data problem: the run is recorded as failed with the reason.

    The source is resolved through ``guard`` (the agency's file roots and connection
    profiles) and every read is on the audit chain; without a guard only a given
    ``connector`` can be read.  With a suite in the manifest the quality gate
    (:mod:`pipelines.quality`) runs between extract and publish; ``suites_dir`` is where
    suites are looked up (the shipped ``expectations/suites`` by default)."""
    prepared, source_error = _prepare_source(manifest, guard, connector)
    try:
        reconcile(manifest, lake=lake, store=store, publisher=publisher)
        run = store.start_run(manifest.id, trigger)
    except BaseException:
        if prepared is not None:
            prepared[0].close()
        raise
    finished = False
    try:
        result = _run(
            manifest,
            run,
            store=store,
            lake=lake,
            guard=guard,
            trigger=trigger,
            progress=progress,
            connector=connector,
            prepared=prepared,
            source_error=source_error,
            suites_dir=suites_dir,
        )
        finished = True
    finally:
        if not finished:
            # Whatever stopped this run (the catalog gone mid-commit, an interrupt), it is
            # not this process's to renew any more: the next reconcile settles it.
            with contextlib.suppress(Exception):
                store.expire_lease(run.id)
    announce(store, publisher)
    return result


def _run(
    manifest: Manifest,
    run: Run,
    *,
    store: CatalogStore,
    lake: Lake,
    guard: SourceGuard | None,
    trigger: str,
    progress: ProgressFn | None,
    connector: Connector | None,
    prepared: tuple[Connector, ResolvedSource] | None,
    source_error: HubError | None,
    suites_dir: Path | None,
) -> Run:
    staged: Staged | None = None
    try:
        if source_error is not None:
            if isinstance(source_error, SourceRefused) and guard is not None:
                guard.record(
                    manifest,
                    None,
                    outcome="denied",
                    run_id=run.id,
                    trigger=trigger,
                    reason=source_error.message,
                )
            raise source_error
        staged = _extract_with_retries(
            manifest,
            lake=lake,
            run_id=run.id,
            guard=guard,
            trigger=trigger,
            progress=progress,
            connector=connector,
            prepared=prepared,
        )
        if manifest.expectations is not None:
            staged = gate(staged, manifest, lake=lake, store=store, suites_dir=suites_dir)
            if staged.quality is not None and staged.quality.blocked:
                return _finish(
                    store,
                    run,
                    "failed",
                    rows_read=staged.rows_read,
                    error=staged.quality.message(),
                )
        version = publish(staged, manifest, lake=lake, store=store)
    except CommitUnsettled as e:
        log.warning("ingest of %s: %s", manifest.id, e.message)
        raise  # the staged files may be the committed version: nothing is deleted
    except HubError as e:
        if staged is not None:
            lake.discard(staged.files)
        log.warning("ingest of %s failed: %s", manifest.id, e.message)
        return _finish(
            store, run, "failed", rows_read=staged.rows_read if staged else 0, error=e.message
        )
    except Exception as e:  # an unexpected failure is still a recorded run
        if staged is not None:
            lake.discard(staged.files)
        down = unavailable(e)
        if down is not None:  # a server went away before the commit: nothing published
            log.warning("ingest of %s stopped: %s unavailable (%s)", manifest.id, down.service, e)
            raise down from e
        log.exception("ingest of %s failed", manifest.id)
        err = ConnectorError(f"{type(e).__name__}: {e}", connector=manifest.source.connector)
        return _finish(store, run, "failed", error=err.message)
    if version is None:
        return _finish(
            store, run, "unchanged", rows_read=staged.rows_read, details=staged.details()
        )
    return _finish(
        store,
        run,
        "succeeded",
        rows_read=staged.rows_read,
        rows_written=version.rows_added,
        bytes_written=staged.bytes_written,
        version=version.version,
        details=staged.details(),
    )


def _finish(store: CatalogStore, run: Run, status: RunStatus, **outcome: Any) -> Run:
    """Record how the run ended; with the catalog gone, say so (the run stays running
    until its lease runs out, then the next reconcile settles it from the lake)."""
    try:
        return store.finish_run(run.id, status, **outcome)
    except Exception as e:
        down = unavailable(e)
        if down is None:
            raise
        raise down from e
