"""The Airflow DAG runs the same ingest steps, end to end, with ``dag.test()`` on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from catalog.audit.log import AuditLog
from catalog.sources.store import SourceStore
from eventlog.sqllog import EventLog
from hub.settings import Settings
from tests.conftest import manifest_dict

pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[1]

SUITE = """{"name": "tickets", "expectations": [
  {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "ticket_id"}},
  {"type": "expect_column_values_to_be_valid_gbt2260_code", "kwargs": {"column": "district_code"}},
  {"type": "expect_column_values_to_be_valid_mainland_mobile", "kwargs": {"column": "caller_phone"}}
]}"""

RUN_DAG = """
import pipelines.dags.blockhub_datasets as dags
run = dags.blockhub_ingest_tickets.test()
print("STATE", run.state)
"""


def test_dag_imports_without_side_effects(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BLOCKHUB_MANIFESTS": str(tmp_path / "none"),
        "AIRFLOW_HOME": str(tmp_path),
    }
    code = (
        "import pipelines.dags.blockhub_datasets as d; "
        "print(sorted(k for k in vars(d) if k.startswith('blockhub_ingest_')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    assert not (tmp_path / "home").exists()


def test_dag_test_ingests_and_notifies(tmp_path: Path) -> None:
    (tmp_path / "exports").mkdir()
    data = tmp_path / "exports" / "tickets.parquet"
    pq.write_table(
        pa.table(
            {
                "ticket_id": pa.array([1, 2, 3], pa.int64()),
                "district_code": ["520102", "520103", "520111"],
                "category": ["噪音扰民"] * 3,
                "caller_phone": ["13812345678"] * 3,
                "amount": pa.array([1, 2, 3], pa.decimal128(12, 2)),
                "updated_at": pa.array([1, 2, 3], pa.timestamp("us", tz="UTC")),
            }
        ),
        data,
    )
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    source = {"connector": "parquet", "root": "exports", "options": {"path": "tickets.parquet"}}
    m = manifest_dict(source={**source, "cursor": "updated_at"})
    m["schedule"] = "@hourly"
    m["expectations"] = "tickets"  # the validate task runs the gate between extract and publish
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "tickets.json").write_text(SUITE, encoding="utf-8")
    (manifests / "tickets.yaml").write_text(yaml.safe_dump(m, allow_unicode=True), encoding="utf-8")

    home = tmp_path / "home"
    settings = Settings(home=home)
    st = settings.open_storage()
    st.store.identity.upsert_agency("gy_12345", "贵阳市12345热线")
    SourceStore(st.store).add_root(
        "gy_12345", "exports", str(data.parent), protected=settings.protected()
    )
    st.close()

    airflow_home = tmp_path / "airflow"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "pipelines" / "dags"),
        "BLOCKHUB_HOME": str(home),
        "BLOCKHUB_MANIFESTS": str(manifests),
        "BLOCKHUB_SUITES": str(suites),
    }
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run(
        [str(airflow), "db", "migrate"], env=env, check=True, capture_output=True, timeout=240
    )
    out = subprocess.run(
        [sys.executable, "-c", RUN_DAG],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "STATE success" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]

    st = settings.open_storage()
    try:
        versions = st.store.versions("tickets")
        assert [(v.version, v.rows_added) for v in versions] == [(1, 3)]
        runs = st.store.list_runs("tickets")
        assert runs[0].status == "succeeded" and runs[0].trigger.startswith("airflow:")
        messages = EventLog(settings.events_db).read("dataset:tickets")
        assert [(m.type, m.data["version"]) for m in messages] == [("dataset.updated", 1)]
        assert messages[0].data["quality"]["status"] == "passed"
        # The Airflow task's read is on the audit chain like any other (the agency, the
        # resolved file).
        reads = AuditLog(st.store).entries(action="source.read")
        assert [(e.agency, e.detail["location"], e.outcome) for e in reads] == [
            ("gy_12345", str(data.resolve()), "ok")
        ]
        assert reads[0].detail["run"] == runs[0].id
    finally:
        st.close()
