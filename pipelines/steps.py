"""The ingest flow split into steps that can run in separate processes (Airflow tasks).

Each step names its work by ids only — the dataset, and the run the first step started —
and finds everything else in the catalog and the lake: the manifest the run started with
and what the previous step handed over (``catalog.pipelinestate``: staged files, which
are in the lake, the quality gate's verdict, the version).  No path on a worker's disk
passes from one task to the next, so any worker may run any task.

A step that is run again (Airflow's retry, a cleared task) finds its own work recorded
and returns it rather than doing it twice: one run per DAG run, one version per run.  A
failure of a server the step needs leaves the run open for the retry; any other failure
is recorded in the run before it is re-raised.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from catalog.datasets.pipelinestate import Handover, PipelineState
from catalog.errors import CommitUnsettled, Conflict, HubError, unavailable
from catalog.runtime import settle_heap
from pipelines.config import Storage, StorageSettings
from pipelines.ingest import extract, publish, reconcile
from pipelines.quality import gate
from pipelines.staged import GateOutcome, Staged

log = logging.getLogger(__name__)

#: How long a run waits, held by no process, between two Airflow tasks before anyone may
#: take it for interrupted (a task that takes it on renews its lease as it works).
HANDOVER_S = 3600.0

#: Statuses of a run whose work a repeated first step may take up again.
_GOING_ON = ("running", "succeeded", "unchanged")


class RunClosed(Conflict):
    """The run a step was asked to continue has ended (failed or interrupted): retrying
    the step cannot help; the orchestrator's run must start over from ``extract``."""

    code = "run_closed"


def _open(settings: StorageSettings | None) -> tuple[Storage, PipelineState]:
    settle_heap()  # each Airflow task is a process of its own: start-up objects frozen
    st = (settings or StorageSettings()).open_storage()
    return st, PipelineState(st.store)


def _ref(dataset_id: str, run_id: str) -> dict[str, Any]:
    return {"dataset": dataset_id, "run_id": run_id}


def _fail(storage: Storage, run_id: str, err: Exception) -> None:
    message = err.message if isinstance(err, HubError) else f"{type(err).__name__}: {err}"
    storage.store.finish_run(run_id, "failed", error=message)


def _interrupted(storage: Storage, run_id: str) -> None:
    """A server went away mid-step: the run stays open for the step's retry."""
    with contextlib.suppress(Exception):
        storage.store.hand_over(run_id, HANDOVER_S)


def _continue(st: Storage, state: PipelineState, ref: Mapping[str, Any]) -> Handover:
    """The hand-over of the run ``ref`` names; :class:`RunClosed` once the run ended
    otherwise than by this flow (failed, interrupted)."""
    h = state.handover(str(ref["run_id"]))
    run = st.store.get_run(h.run_id)
    if run.status not in _GOING_ON:
        raise RunClosed(
            f"run {run.id} of {run.dataset_id} is {run.status}"
            + (f" ({run.error})" if run.error else "")
            + "; start the ingest again from its first task",
            run=run.id,
            dataset=run.dataset_id,
        )
    return h


def extract_step(
    dataset_id: str,
    *,
    origin: str,
    trigger: str = "airflow",
    settings: StorageSettings | None = None,
) -> dict[str, Any]:
    """Start a run of a registered dataset and stage the new rows in the lake; returns the
    run's ids.  ``origin`` names the orchestrator's work (Airflow: ``dag_id/run_id``): a
    second attempt of the same work returns the run the first one handed over."""
    st, state = _open(settings)
    try:
        manifest = st.store.get_dataset(dataset_id).manifest
        state.check_active(dataset_id)  # a run queued before the DAG went away
        earlier = state.by_origin(dataset_id, origin)
        if earlier is not None and st.store.get_run(earlier.run_id).status in _GOING_ON:
            return _ref(dataset_id, earlier.run_id)
        guard = (settings or StorageSettings()).source_guard(st.store)
        reconcile(manifest, lake=st.lake, store=st.store, publisher=st.log.append)
        run = st.store.start_run(dataset_id, trigger[:32])
        try:
            staged = extract(manifest, lake=st.lake, run_id=run.id, guard=guard, trigger=trigger)
        except Exception as e:
            _fail(st, run.id, e)
            raise
        state.hand(run.id, "extracted", staged.to_dict(), manifest=manifest, origin=origin)
        st.store.hand_over(run.id, HANDOVER_S)
        return _ref(dataset_id, run.id)
    finally:
        st.close()


def _verdict(ref: Mapping[str, Any], h: Handover) -> dict[str, Any]:
    quality = h.payload.get("quality")
    out = _ref(h.dataset_id, h.run_id)
    if quality:
        outcome = GateOutcome.from_dict(quality)
        if outcome.blocked:
            out["blocked"] = outcome.message()
    return out


def validate_step(
    ref: Mapping[str, Any], *, settings: StorageSettings | None = None
) -> dict[str, Any]:
    """Run the quality gate on what the run staged.  A blocked batch finishes the run as
    failed here (its rows are in quarantine) and the answer carries ``blocked``: the
    reason, for the orchestrator to fail the task without retrying."""
    st, state = _open(settings)
    try:
        h = _continue(st, state, ref)
        if h.stage != "extracted":
            return _verdict(ref, h)  # gated already (a repeated task)
        s = Staged.from_dict(h.payload)
        st.store.take_over(s.run_id)
        try:
            gated = gate(
                s,
                h.manifest,
                lake=st.lake,
                store=st.store,
                publisher=st.log.append,
                suites_dir=(settings or StorageSettings()).suites,
            )
        except Exception as e:
            if unavailable(e) is not None:
                _interrupted(st, s.run_id)
                raise
            st.lake.discard(s.files)
            _fail(st, s.run_id, e)
            raise
        h = state.hand(s.run_id, "validated", gated.to_dict())
        if gated.quality is not None and gated.quality.blocked:
            st.store.finish_run(
                s.run_id, "failed", rows_read=s.rows_read, error=gated.quality.message()
            )
        else:
            st.store.hand_over(s.run_id, HANDOVER_S)
        return _verdict(ref, h)
    finally:
        st.close()


def _finish_published(st: Storage, s: Staged, version: int | None, rows: int) -> None:
    st.store.finish_run(
        s.run_id,
        "succeeded" if version is not None else "unchanged",
        rows_read=s.rows_read,
        rows_written=rows,
        bytes_written=s.bytes_written if version is not None else 0,
        version=version,
        details=s.details(),
    )


def publish_step(
    ref: Mapping[str, Any], *, settings: StorageSettings | None = None
) -> dict[str, Any]:
    """Commit what the run staged and the gate passed; the answer carries ``version``
    (None when nothing was new, or the batch was blocked)."""
    st, state = _open(settings)
    try:
        h = state.handover(str(ref["run_id"]))
        if h.stage == "published":
            return {**_ref(h.dataset_id, h.run_id), "version": h.payload.get("version")}
        s = Staged.from_dict(h.payload)
        if s.quality is not None and s.quality.blocked:
            return {**_ref(h.dataset_id, h.run_id), "version": None}  # failed in validate
        if h.stage != "validated":
            raise RunClosed(
                f"run {s.run_id} of {s.dataset_id} was not validated; run its validate task",
                run=s.run_id,
            )
        # An earlier attempt may have committed before its catalog went away: the lake
        # knows; reconcile records the version and settles the run, which is then ours.
        reconcile(h.manifest, lake=st.lake, store=st.store, publisher=None)
        mine = [v for v in st.store.versions(s.dataset_id) if v.run_id == s.run_id]
        run = st.store.get_run(s.run_id)
        if mine:
            if run.status == "running":
                _finish_published(st, s, mine[0].version, mine[0].rows_added)
            state.hand(s.run_id, "published", {"version": mine[0].version})
            return {**_ref(s.dataset_id, s.run_id), "version": mine[0].version}
        h = _continue(st, state, ref)
        st.store.take_over(s.run_id)
        try:
            version = publish(s, h.manifest, lake=st.lake, store=st.store)
        except CommitUnsettled:
            # The files may be the committed version: kept; the retry (or any later run)
            # reconciles, recording the version if the commit landed.
            st.store.expire_lease(s.run_id)
            raise
        except Exception as e:
            if unavailable(e) is not None:
                _interrupted(st, s.run_id)
                raise
            st.lake.discard(s.files)
            _fail(st, s.run_id, e)
            raise
        number = version.version if version is not None else None
        _finish_published(st, s, number, version.rows_added if version is not None else 0)
        state.hand(s.run_id, "published", {"version": number})
        return {**_ref(s.dataset_id, s.run_id), "version": number}
    finally:
        st.close()


def notify_step(ref: Mapping[str, Any], *, settings: StorageSettings | None = None) -> int | None:
    """Announce the version: publish the catalog's outbox, where ``publish_step`` left the
    version's ``dataset.updated`` in its commit; returns that message's offset.  A log
    that is down fails the task (Airflow retries it); the event stays in the outbox."""
    if ref.get("version") is None:
        return None
    st, _ = _open(settings)
    try:
        drained = st.store.outbox.drain(st.log.append, force=True)
        if drained.error is not None:
            raise RuntimeError(f"event log unavailable: {drained.error}")
        where = st.store.outbox.published(f"version:{ref['dataset']}:{int(ref['version'])}")
        return where[1] if where is not None else None
    finally:
        st.close()
