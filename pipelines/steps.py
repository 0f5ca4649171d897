"""The ingest flow split into steps that can run in separate processes (Airflow tasks).

Each step takes and returns small JSON-able payloads (what Airflow passes between
tasks as XCom), opens storage from settings, and records a failure in the run
before re-raising it so that the orchestrator retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from catalog.datasets.manifest import Manifest, load_manifest
from catalog.errors import CommitUnsettled, HubError
from catalog.runtime import settle_heap
from pipelines.config import Storage, StorageSettings
from pipelines.ingest import extract, publish, reconcile
from pipelines.quality import gate
from pipelines.staged import Staged

#: How long a run waits, held by no process, between two Airflow tasks before anyone may
#: take it for interrupted (a task that takes it on renews its lease as it works).
HANDOVER_S = 3600.0


def _open(manifest_path: str, settings: StorageSettings | None) -> tuple[Manifest, Storage]:
    settle_heap()  # each Airflow task is a process of its own: start-up objects frozen
    manifest = load_manifest(manifest_path)
    storage = (settings or StorageSettings()).open_storage()
    return manifest, storage


def _fail(storage: Storage, run_id: str, err: Exception) -> None:
    message = err.message if isinstance(err, HubError) else f"{type(err).__name__}: {err}"
    storage.store.finish_run(run_id, "failed", error=message)


def extract_step(
    manifest_path: str,
    *,
    trigger: str,
    settings: StorageSettings | None = None,
) -> dict[str, Any]:
    """Register the manifest (its source checked against the agency's roots and profiles,
    as any registration), close interrupted runs, start a run and stage the new rows."""
    manifest, st = _open(manifest_path, settings)
    try:
        guard = (settings or StorageSettings()).source_guard(st.store)
        guard.check(manifest, file=manifest_path)
        st.store.register_dataset(manifest)
        reconcile(manifest, lake=st.lake, store=st.store, publisher=st.log.append)
        run = st.store.start_run(manifest.id, trigger)
        try:
            staged = extract(manifest, lake=st.lake, run_id=run.id, guard=guard, trigger=trigger)
        except Exception as e:
            _fail(st, run.id, e)
            raise
        st.store.hand_over(run.id, HANDOVER_S)
        return staged.to_dict()
    finally:
        st.close()


def validate_step(
    manifest_path: str, staged: Mapping[str, Any], *, settings: StorageSettings | None = None
) -> dict[str, Any]:
    """Run the quality gate on what was staged; returns what publish should commit.

    A blocked batch finishes the run as failed here (its rows are in quarantine) and
    comes back with a blocked :class:`~pipelines.staged.GateOutcome` and no files.
    """
    manifest, st = _open(manifest_path, settings)
    s = Staged.from_dict(staged)
    try:
        st.store.take_over(s.run_id)
        try:
            gated = gate(
                s,
                manifest,
                lake=st.lake,
                store=st.store,
                publisher=st.log.append,
                suites_dir=(settings or StorageSettings()).suites,
            )
        except Exception as e:
            st.lake.discard(s.files)
            _fail(st, s.run_id, e)
            raise
        if gated.quality is not None and gated.quality.blocked:
            st.store.finish_run(
                s.run_id, "failed", rows_read=s.rows_read, error=gated.quality.message()
            )
        else:
            st.store.hand_over(s.run_id, HANDOVER_S)
        return gated.to_dict()
    finally:
        st.close()


def publish_step(
    manifest_path: str, staged: Mapping[str, Any], *, settings: StorageSettings | None = None
) -> dict[str, Any] | None:
    """Commit what was staged; returns the new version, or None when nothing was new."""
    s = Staged.from_dict(staged)
    if s.quality is not None and s.quality.blocked:
        return None  # validate_step already recorded the run as failed
    manifest, st = _open(manifest_path, settings)
    try:
        st.store.take_over(s.run_id)
        try:
            version = publish(s, manifest, lake=st.lake, store=st.store)
        except CommitUnsettled:
            # The files may be the committed version: kept; Airflow's retry (or any later
            # run) reconciles, recording the version if the commit landed.
            st.store.expire_lease(s.run_id)
            raise
        except Exception as e:
            st.lake.discard(s.files)
            _fail(st, s.run_id, e)
            raise
        if version is None:
            st.store.finish_run(s.run_id, "unchanged", rows_read=s.rows_read, details=s.details())
            return None
        st.store.finish_run(
            s.run_id,
            "succeeded",
            rows_read=s.rows_read,
            rows_written=version.rows_added,
            bytes_written=s.bytes_written,
            version=version.version,
            details=s.details(),
        )
        quality = None if s.quality is None else s.quality.to_dict()
        return {**version.to_dict(), "regions": s.regions, "quality": quality}
    finally:
        st.close()


def notify_step(
    manifest_path: str,
    version: Mapping[str, Any] | None,
    *,
    settings: StorageSettings | None = None,
) -> int | None:
    """Announce the version: publish the catalog's outbox, where ``publish_step`` left the
    version's ``dataset.updated`` in its commit; returns that message's offset.  A log
    that is down fails the task (Airflow retries it); the event stays in the outbox."""
    if version is None:
        return None
    manifest, st = _open(manifest_path, settings)
    try:
        drained = st.store.outbox.drain(st.log.append, force=True)
        if drained.error is not None:
            raise RuntimeError(f"event log unavailable: {drained.error}")
        where = st.store.outbox.published(f"version:{manifest.id}:{int(version['version'])}")
        return where[1] if where is not None else None
    finally:
        st.close()
