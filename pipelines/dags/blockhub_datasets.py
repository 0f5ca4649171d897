"""Airflow DAGs: one per dataset registered in the blockhub catalog.

The DAGs come from the catalog the ``BLOCKHUB_*`` variables name, not from files:
registering a dataset (``blockhub register``) makes its DAG at the dag-processor's next
parse, retiring it (``blockhub retire``) takes the DAG away; no file is edited.  Parsing
only reads the catalog (``pipelines.registry.pipeline_manifests``) and creates nothing.

Thin wiring around the steps of :mod:`pipelines.steps`: extract >> validate >> publish >>
notify.  Tasks pass each other the dataset and run ids only; the staged batch is in the
lake and its hand-over in the catalog, so any worker can run any task.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, dag, task
from airflow.sdk.exceptions import AirflowFailException

from catalog.datasets.manifest import Manifest
from pipelines.config import StorageSettings
from pipelines.registry import pipeline_manifests


def build_dag(manifest: Manifest) -> DAG:
    dataset_id = manifest.id

    @dag(
        dag_id=f"blockhub_ingest_{dataset_id}",
        description=f"Ingest {manifest.title} ({manifest.agency})",
        schedule=manifest.schedule,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,  # runs of one dataset never overlap: the cursor is per table
        # Registering the dataset is the decision to ingest it: no second switch to turn on.
        is_paused_upon_creation=False,
        tags=["blockhub", manifest.agency],
        default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    )
    def ingest() -> None:
        @task
        def extract(**context: Any) -> dict[str, Any]:
            from catalog.datasets.pipelinestate import DatasetRetired
            from pipelines.steps import extract_step

            run = context["dag_run"]
            try:
                return extract_step(
                    dataset_id,
                    origin=f"{run.dag_id}/{run.run_id}",
                    trigger=f"airflow:{getattr(run.run_type, 'value', run.run_type)}",
                )
            except DatasetRetired as e:  # queued before its DAG went away: retrying cannot help
                raise AirflowFailException(e.message) from None

        @task
        def validate(ref: dict[str, Any]) -> dict[str, Any]:
            from pipelines.steps import RunClosed, validate_step

            try:
                gated = validate_step(ref)
            except RunClosed as e:
                raise AirflowFailException(e.message) from None
            if "blocked" in gated:
                # Not a transient error: retrying cannot make the batch pass.
                raise AirflowFailException(gated["blocked"])
            return gated

        @task
        def publish(ref: dict[str, Any]) -> dict[str, Any]:
            from pipelines.steps import RunClosed, publish_step

            try:
                return publish_step(ref)
            except RunClosed as e:
                raise AirflowFailException(e.message) from None

        @task
        def notify(ref: dict[str, Any]) -> int | None:
            from pipelines.steps import notify_step

            return notify_step(ref)

        # TaskFlow passes XComArgs where the functions declare their runtime values.
        notify(publish(validate(extract())))  # type: ignore[arg-type]

    return ingest()


for _manifest in pipeline_manifests(StorageSettings().catalog_db):
    _dag = build_dag(_manifest)
    globals()[_dag.dag_id] = _dag
