"""The Airflow task steps without Airflow: DAGs come from the catalog, tasks hand over by
ids through the catalog and the lake, and a repeated task does its work once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from catalog.audit.log import AuditLog
from catalog.datasets.manifest import Manifest, parse_manifest
from catalog.datasets.pipelinestate import DatasetRetired, PipelineState
from hub.assembly.context import Hub
from hub.settings import Settings
from pipelines.registry import pipeline_manifests
from pipelines.steps import (
    extract_step,
    notify_step,
    publish_step,
    validate_step,
)
from tests.conftest import file_source, manifest_dict


def _register(hub: Hub, folder: Path, ident: str = "tickets", **overrides: object) -> Manifest:
    source = file_source(hub, folder, "*.parquet")
    m = parse_manifest(
        manifest_dict(id=ident, source={**source, "cursor": "updated_at"}, **overrides)
    )
    hub.register(m, file=f"<{ident}>")
    return m


def test_no_catalog_no_dags_and_nothing_created(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "none")
    assert pipeline_manifests(settings.catalog_db) == []
    assert not (tmp_path / "none").exists()


def test_dags_follow_registration_and_retirement(
    hub: Hub, settings: Settings, tickets_file: Path, make_feed: Callable[..., Manifest]
) -> None:
    assert pipeline_manifests(settings.catalog_db) == []
    _register(hub, tickets_file.parent, "tickets")
    _register(hub, tickets_file.parent, "tickets_b", schedule="@daily")
    # A live feed is fed by `blockhub serve`, not by runs: no DAG.
    hub.store.register_dataset(make_feed("aq_push", {"aqi": "int64"}, agency="gy_hbj"))
    assert [m.id for m in pipeline_manifests(settings.catalog_db)] == ["tickets", "tickets_b"]

    state = PipelineState(hub.store)
    state.retire("tickets", by="steward", reason="source closed")
    assert [m.id for m in pipeline_manifests(settings.catalog_db)] == ["tickets_b"]
    entry = AuditLog(hub.store).entries(action="dataset.retire")[0]
    assert (entry.action, entry.principal, list(entry.datasets)) == (
        "dataset.retire",
        "steward",
        ["tickets"],
    )
    assert entry.detail == {"reason": "source closed"}

    # Registering the manifest again is asking for it again.
    _register(hub, tickets_file.parent, "tickets")
    assert [m.id for m in pipeline_manifests(settings.catalog_db)] == ["tickets", "tickets_b"]
    assert [e.action for e in AuditLog(hub.store).entries(action="dataset.reinstate")] == [
        "dataset.reinstate"
    ]


def test_a_retired_dataset_is_not_ingested(
    hub: Hub, settings: Settings, tickets_file: Path
) -> None:
    _register(hub, tickets_file.parent)
    PipelineState(hub.store).retire("tickets")
    with pytest.raises(DatasetRetired, match="retired"):
        extract_step("tickets", origin="dag/run-1", settings=settings)
    with pytest.raises(DatasetRetired):  # `blockhub ingest`, POST …/runs
        hub.ingest("tickets")
    assert hub.store.list_runs("tickets") == []


def test_steps_hand_over_by_ids_through_the_catalog(
    hub: Hub, settings: Settings, tickets_file: Path
) -> None:
    _register(hub, tickets_file.parent)
    ref = extract_step("tickets", origin="dag/run-1", trigger="airflow:manual", settings=settings)
    # What travels between tasks (Airflow's XCom): two ids, no path, no file list.
    assert set(ref) == {"dataset", "run_id"}
    handed = PipelineState(hub.store).handover(ref["run_id"])
    assert handed.stage == "extracted" and handed.manifest.id == "tickets"
    assert handed.payload["rows_read"] == 50
    lake_root = settings.lake_warehouse.removeprefix("file://")
    assert all(f[0].removeprefix("file://").startswith(lake_root) for f in handed.payload["files"])

    gated = validate_step(ref, settings=settings)
    assert "blocked" not in gated
    published = publish_step(gated, settings=settings)
    assert published["version"] == 1
    offset = notify_step(published, settings=settings)
    assert offset is not None

    run = hub.store.get_run(ref["run_id"])
    assert (run.status, run.trigger, run.version, run.rows_written) == (
        "succeeded",
        "airflow:manual",
        1,
        50,
    )
    assert json.dumps(published).find("/") < 0  # ids only, here too


def test_each_step_run_again_does_its_work_once(
    hub: Hub, settings: Settings, tickets_file: Path
) -> None:
    """Airflow retries a task whose worker died after the work was done (and clears whole
    DAG runs on request): each step finds its recorded work and returns it."""
    _register(hub, tickets_file.parent)
    ref = extract_step("tickets", origin="dag/run-1", settings=settings)
    assert extract_step("tickets", origin="dag/run-1", settings=settings) == ref
    assert len(hub.store.list_runs("tickets")) == 1
    gated = validate_step(ref, settings=settings)
    assert validate_step(ref, settings=settings) == gated
    published = publish_step(gated, settings=settings)
    assert publish_step(gated, settings=settings) == published
    offset = notify_step(published, settings=settings)
    assert notify_step(published, settings=settings) == offset
    # The whole DAG run again (cleared): still one run, one version, one announcement.
    again = extract_step("tickets", origin="dag/run-1", settings=settings)
    assert publish_step(validate_step(again, settings=settings), settings=settings) == published
    assert [v.version for v in hub.store.versions("tickets")] == [1]
    assert len(hub.store.list_runs("tickets")) == 1
    assert [m.data["version"] for m in hub.log.read("dataset:tickets")] == [1]

    # Another DAG run is another ingest: nothing new in the source, nothing published.
    ref2 = extract_step("tickets", origin="dag/run-2", settings=settings)
    assert ref2["run_id"] != ref["run_id"]
    nothing = publish_step(validate_step(ref2, settings=settings), settings=settings)
    assert nothing["version"] is None
    assert hub.store.get_run(ref2["run_id"]).status == "unchanged"


def test_a_failed_run_is_not_taken_up_again(
    hub: Hub, settings: Settings, tickets_file: Path
) -> None:
    """A run that ended failed cannot be continued (its staged files are gone): a later
    step says so, and the same DAG run cleared from its first task starts a new run."""
    from pipelines.steps import RunClosed

    _register(hub, tickets_file.parent)
    ref = extract_step("tickets", origin="dag/run-1", settings=settings)
    hub.store.finish_run(ref["run_id"], "failed", error="stopped by the operator")
    with pytest.raises(RunClosed, match="stopped by the operator"):
        validate_step(ref, settings=settings)
    again = extract_step("tickets", origin="dag/run-1", settings=settings)
    assert again["run_id"] != ref["run_id"]
    assert publish_step(validate_step(again, settings=settings), settings=settings)["version"] == 1


def test_publish_after_a_commit_the_catalog_missed_records_it_once(
    hub: Hub, settings: Settings, tickets_file: Path
) -> None:
    """The publish task committed to the lake and lost the catalog before recording the
    version (its worker died, or CommitUnsettled): the retried task finds the commit in
    the lake and records it, instead of committing the batch a second time."""
    from pipelines.staged import Staged

    m = _register(hub, tickets_file.parent)
    ref = extract_step("tickets", origin="dag/run-1", settings=settings)
    validate_step(ref, settings=settings)
    staged = Staged.from_dict(PipelineState(hub.store).handover(ref["run_id"]).payload)
    hub.lake.commit(  # what publish does first; then its process died
        "tickets",
        staged.files,
        mode=m.source.mode,
        cursor=staged.cursor,
        run_id=staged.run_id,
        key=m.primary_key or None,
        state=staged.state,
        expect_snapshot=staged.base_snapshot,
    )
    assert hub.store.versions("tickets") == []

    published = publish_step(ref, settings=settings)
    assert published["version"] == 1
    assert [(v.version, v.run_id, v.total_rows) for v in hub.store.versions("tickets")] == [
        (1, ref["run_id"], 50)
    ]
    assert len(hub.lake.snapshots("tickets")) == 1
    assert hub.store.get_run(ref["run_id"]).status == "succeeded"
    assert notify_step(published, settings=settings) is not None
    assert [e.data["version"] for e in hub.log.read("dataset:tickets")] == [1]
