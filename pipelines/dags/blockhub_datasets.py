"""Airflow DAGs: one per dataset manifest in ``$BLOCKHUB_MANIFESTS``.

Thin wiring around the same functions the embedded runner uses
(:mod:`pipelines.steps`): extract >> validate >> publish >> notify.  Parsing is cheap and has
no side effects: it lists manifest files and reads their id and schedule.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, dag, task
from airflow.sdk.exceptions import AirflowFailException

from catalog.datasets.manifest import load_manifest
from catalog.errors import ManifestError


def build_dag(manifest_path: Path) -> DAG:
    manifest = load_manifest(manifest_path)
    path = str(manifest_path.resolve())

    @dag(
        dag_id=f"blockhub_ingest_{manifest.id}",
        description=f"Ingest {manifest.title} ({manifest.agency})",
        schedule=manifest.schedule,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,  # runs of one dataset never overlap: the cursor is per table
        tags=["blockhub", manifest.agency],
        default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    )
    def ingest() -> None:
        @task
        def extract(**context: Any) -> dict[str, Any]:
            from pipelines.steps import extract_step

            trigger = f"airflow:{context['dag_run'].run_id}"
            return extract_step(path, trigger=trigger)

        @task
        def validate(staged: dict[str, Any]) -> dict[str, Any]:
            from pipelines.staged import Staged
            from pipelines.steps import validate_step

            gated = validate_step(path, staged)
            outcome = Staged.from_dict(gated).quality
            if outcome is not None and outcome.blocked:
                # Not a transient error: retrying cannot make the batch pass.
                raise AirflowFailException(
                    f"quality gate blocked the batch; quarantined as {outcome.quarantine_batch}"
                )
            return gated

        @task
        def publish(staged: dict[str, Any]) -> dict[str, Any] | None:
            from pipelines.steps import publish_step

            return publish_step(path, staged)

        @task
        def notify(version: dict[str, Any] | None) -> int | None:
            from pipelines.steps import notify_step

            return notify_step(path, version)

        # TaskFlow passes XComArgs where the functions declare their runtime values.
        notify(publish(validate(extract())))  # type: ignore[arg-type]

    return ingest()


def _manifest_files() -> list[Path]:
    folder = os.environ.get("BLOCKHUB_MANIFESTS")
    if not folder or not Path(folder).is_dir():
        return []
    return sorted([*Path(folder).glob("*.yaml"), *Path(folder).glob("*.yml")])


for _path in _manifest_files():
    try:
        if load_manifest(_path).source.connector in ("mqtt", "push"):
            continue  # a live feed is fed by `blockhub serve`, not by runs (docs/feeds.md)
        _dag = build_dag(_path)
    except ManifestError as _err:  # one broken manifest must not hide the other DAGs
        logging.getLogger(__name__).error("skipping manifest: %s", _err.message)
        continue
    globals()[_dag.dag_id] = _dag
