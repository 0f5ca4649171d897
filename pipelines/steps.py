"""The ingest flow split into steps that can run in separate processes (Airflow tasks).

Each step takes and returns small JSON-able payloads (what Airflow passes between
tasks as XCom), opens storage from settings, and records a failure in the run
before re-raising it so that the orchestrator retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from catalog.errors import HubError
from catalog.manifest import Manifest, load_manifest
from catalog.runtime import settle_heap
from pipelines.config import Storage, StorageSettings
from pipelines.ingest import Staged, extract, notify, publish, reconcile
from pipelines.quality import blocked_message, gate


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
        return staged.to_dict()
    finally:
        st.close()


def validate_step(
    manifest_path: str, staged: Mapping[str, Any], *, settings: StorageSettings | None = None
) -> dict[str, Any]:
    """Run the quality gate on what was staged; returns what publish should commit.

    A blocked batch finishes the run as failed here (its rows are in quarantine) and
    comes back with ``quality.status == "blocked"`` and no files.
    """
    manifest, st = _open(manifest_path, settings)
    s = Staged.from_dict(staged)
    try:
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
        if gated.quality is not None and gated.quality["status"] == "blocked":
            st.store.finish_run(
                s.run_id, "failed", rows_read=s.rows_read, error=blocked_message(gated.quality)
            )
        return gated.to_dict()
    finally:
        st.close()


def publish_step(
    manifest_path: str, staged: Mapping[str, Any], *, settings: StorageSettings | None = None
) -> dict[str, Any] | None:
    """Commit what was staged; returns the new version, or None when nothing was new."""
    s = Staged.from_dict(staged)
    if s.quality is not None and s.quality["status"] == "blocked":
        return None  # validate_step already recorded the run as failed
    manifest, st = _open(manifest_path, settings)
    try:
        try:
            version = publish(s, manifest, lake=st.lake, store=st.store)
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
        return {**version.to_dict(), "regions": s.regions, "quality": s.quality}
    finally:
        st.close()


def notify_step(
    manifest_path: str,
    version: Mapping[str, Any] | None,
    *,
    settings: StorageSettings | None = None,
) -> int | None:
    """Announce the version on the event log; returns the message offset."""
    if version is None:
        return None
    manifest, st = _open(manifest_path, settings)
    try:
        v = st.store.get_version(manifest.id, int(version["version"]))
        offsets: list[int] = []

        def publisher(
            channel: str, type: str, data: dict[str, Any], source: dict[str, Any] | None = None
        ) -> None:
            offsets.append(st.log.append(channel, type, data, source).offset)

        notify(
            v, manifest, publisher, regions=version.get("regions"), quality=version.get("quality")
        )
        return offsets[0]
    finally:
        st.close()
