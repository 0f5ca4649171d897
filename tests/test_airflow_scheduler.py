"""Pipelines on a real Airflow 3: a scheduler (LocalExecutor), a dag-processor and the
api-server its task runner reports to, each a process of its own, over a blockhub whose
catalog, Iceberg catalog and event log are on the machine's PostgreSQL.

One test walks the whole life of a pipeline, to start Airflow once (~1–2 min):
a dataset registered before Airflow starts gets its DAG and is ingested on its schedule;
a retired one's DAG goes away; one registered while Airflow runs gets a DAG without any
file being edited and is ingested by a triggered run.  Tasks hand each other ids
only (Airflow's XCom table is read to check it).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from catalog.datasets.manifest import Manifest, parse_manifest
from catalog.datasets.pipelinestate import PipelineState
from hub.assembly.context import Hub
from hub.settings import Settings
from tests.airflow_stack import AirflowStack
from tests.conftest import fresh_pg_database, manifest_dict, ticket_rows

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(900)]


@pytest.fixture
def pg_blockhub(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The ``BLOCKHUB_*`` variables of a production-shaped hub: catalog, Iceberg catalog
    and event log on a fresh PostgreSQL database, an audit key, the lake in a folder."""
    with fresh_pg_database() as url:
        yield {
            "BLOCKHUB_HOME": str(tmp_path / "home"),
            "BLOCKHUB_CATALOG_URL": url,
            "BLOCKHUB_LAKE_CATALOG_URL": url,
            "BLOCKHUB_EVENTS_URL": url,
            "BLOCKHUB_AUDIT_KEY": secrets.token_hex(32),
        }


def _settings(env: dict[str, str]) -> Settings:
    return Settings(
        home=Path(env["BLOCKHUB_HOME"]),
        catalog_url=env["BLOCKHUB_CATALOG_URL"],
        lake_catalog_url=env["BLOCKHUB_LAKE_CATALOG_URL"],
        events_url=env["BLOCKHUB_EVENTS_URL"],
        audit_key=env["BLOCKHUB_AUDIT_KEY"],
    )


def _manifest(hub: Hub, folder: Path, ident: str, schedule: str | None) -> Manifest:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(ticket_rows(1, 40), folder / "tickets-1.parquet")
    if hub.sources.sources.get_root("gy_12345", ident) is None:
        hub.sources.sources.add_root(
            "gy_12345", ident, str(folder), protected=hub.sources.protected
        )
    source = {"connector": "parquet", "root": ident, "options": {"path": "*.parquet"}}
    return parse_manifest(
        manifest_dict(id=ident, schedule=schedule, source={**source, "cursor": "updated_at"})
    )


def test_a_scheduler_runs_the_catalogs_pipelines(
    tmp_path: Path, pg_blockhub: dict[str, str]
) -> None:
    hub = Hub.open(_settings(pg_blockhub))
    try:
        hub.store.identity.upsert_agency("gy_12345", "贵阳市12345政务服务便民热线")
        # Every minute: with catchup off the scheduler runs the interval that just ended
        # as soon as it sees the DAG.
        hub.register(_manifest(hub, tmp_path / "a", "tickets_a", "* * * * *"), file="<a>")
        with AirflowStack(tmp_path, pg_blockhub) as af:
            af.wait_for(lambda: bool(hub.store.versions("tickets_a")), "a scheduled ingest")
            [v1] = hub.store.versions("tickets_a")
            assert (v1.version, v1.rows_added) == (1, 40)
            run = hub.store.get_run(v1.run_id or "")
            assert (run.status, run.trigger) == ("succeeded", "airflow:scheduled")
            af.wait_for(
                lambda: any(s == "success" for *_, s in af.dag_runs("blockhub_ingest_tickets_a")),
                "the DAG run to be marked a success",
                timeout=120,
            )
            # What the tasks handed each other: ids, never a path or a file list.
            handed = af.xcoms("blockhub_ingest_tickets_a")
            assert {t for t, _ in handed} >= {"extract", "validate", "publish"}
            for task_id, value in handed:
                if task_id != "notify":
                    doc = json.loads(value)
                    assert set(doc) <= {"dataset", "run_id", "version"}, (task_id, doc)
                    assert doc["run_id"] == v1.run_id

            # Retired: its DAG goes away (stale) at the next parse; its data stays.
            PipelineState(hub.store).retire("tickets_a", reason="source closed")
            # Registered while Airflow runs: a DAG without any file edited; a run on demand.
            hub.register(_manifest(hub, tmp_path / "b", "tickets_b", None), file="<b>")
            af.wait_for(lambda: "blockhub_ingest_tickets_b" in af.dags(), "the new dataset's DAG")
            assert not af.dags()["blockhub_ingest_tickets_b"]["is_paused"]
            af.airflow("dags", "trigger", "blockhub_ingest_tickets_b")
            af.wait_for(lambda: bool(hub.store.versions("tickets_b")), "a triggered ingest")
            assert hub.store.versions("tickets_b")[0].total_rows == 40
            af.wait_for(lambda: bool(hub.log.read("dataset:tickets_b")), "its announcement")
            af.wait_for(lambda: af.dags()["blockhub_ingest_tickets_a"]["is_stale"], "the DAG to go")
            assert not af.dags()["blockhub_ingest_tickets_b"]["is_stale"]
        assert hub.store.versions("tickets_a") == [v1]
        # Every version was announced (notify) once.
        assert [m.data["version"] for m in hub.log.read("dataset:tickets_a")] == [1]
        assert [m.data["version"] for m in hub.log.read("dataset:tickets_b")] == [1]
        # No run failed; a scheduled one may have been cut short by stopping Airflow.
        statuses = {r.status for r in hub.store.list_runs("tickets_a")}
        assert statuses <= {"succeeded", "unchanged", "running"}, statuses
    finally:
        hub.close()
