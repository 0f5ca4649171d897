"""The Airflow DAGs come from the catalog and run the same ingest steps, end to end, with
``dag.test()`` on SQLite (tests/test_airflow_scheduler.py runs them on a real scheduler)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.audit.log import AuditLog
from catalog.datasets.manifest import parse_manifest
from catalog.sources.store import SourceStore
from eventlog.sqllog import EventLog
from hub.settings import Settings
from tests.conftest import manifest_dict
from tests.test_doc_commands import extract

pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[1]

SUITE = """{"name": "tickets", "expectations": [
  {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "ticket_id"}},
  {"type": "expect_column_values_to_be_valid_gbt2260_code", "kwargs": {"column": "district_code"}},
  {"type": "expect_column_values_to_be_valid_mainland_mobile", "kwargs": {"column": "caller_phone"}}
]}"""


DAG_IDS = (
    "import pipelines.dags.blockhub_datasets as d; "
    "print(sorted(k for k in vars(d) if k.startswith('blockhub_ingest_')))"
)


def test_dag_imports_without_side_effects(tmp_path: Path) -> None:
    """No catalog yet (a fresh installation): no DAG, and parsing creates nothing."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BLOCKHUB_")},
        "BLOCKHUB_HOME": str(tmp_path / "home"),
        "AIRFLOW_HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", DAG_IDS], env=env, cwd=ROOT, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"
    assert not (tmp_path / "home").exists()


def _operations_airflow_block() -> list[str]:
    """The commands of docs/operations.md's block that starts with ``airflow db migrate``
    ("Right after installation"), as printed."""
    for block in extract(ROOT / "docs" / "operations.md"):
        texts = [c.text for c in block.commands]
        if "airflow db migrate" in texts:
            return texts
    raise AssertionError("docs/operations.md shows no `airflow db migrate` block")


def test_documented_airflow_commands_list_and_run_the_catalogs_dag(tmp_path: Path) -> None:
    """docs/operations.md's commands, run as printed in a checkout-like folder whose
    ``./blockhub-data`` catalog holds one registered dataset: `airflow dags list` shows its
    DAG right after `airflow db migrate`, and `airflow dags test` ingests it through the
    four tasks (quality gate included), announces the version and puts the read on the
    audit chain."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "pipelines").symlink_to(ROOT / "pipelines")
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
    source = {"connector": "parquet", "root": "exports", "options": {"path": "tickets.parquet"}}
    m = manifest_dict(id="hotline_tickets", source={**source, "cursor": "updated_at"})
    m["schedule"] = "@hourly"
    m["expectations"] = "tickets"  # the validate task runs the gate between extract and publish
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "tickets.json").write_text(SUITE, encoding="utf-8")

    home = checkout / "blockhub-data"
    settings = Settings(home=home, suites=suites)
    st = settings.open_storage()
    st.store.identity.upsert_agency("gy_12345", "贵阳市12345热线")
    SourceStore(st.store).add_root(
        "gy_12345", "exports", str(data.parent), protected=settings.protected()
    )
    st.store.register_dataset(parse_manifest(m))  # the DAG comes from the catalog
    st.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOCKHUB_", "AIRFLOW"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["BLOCKHUB_SUITES"] = str(suites)  # the test's suite; the docs use the shipped ones
    exports: list[str] = []
    said: dict[str, str] = {}
    for cmd in _operations_airflow_block():
        if cmd.startswith("export "):
            exports.append(cmd)
            continue
        script = "set -e\n" + "\n".join(exports) + "\n" + cmd
        r = subprocess.run(
            ["bash", "-c", script], cwd=checkout, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, f"`{cmd}` exited {r.returncode}:\n{r.stderr[-3000:]}"
        said[cmd] = r.stdout
    assert "blockhub_ingest_hotline_tickets" in said["airflow dags list"]

    st = settings.open_storage()
    try:
        versions = st.store.versions("hotline_tickets")
        assert [(v.version, v.rows_added) for v in versions] == [(1, 3)]
        runs = st.store.list_runs("hotline_tickets")
        assert (runs[0].status, runs[0].trigger) == ("succeeded", "airflow:manual")
        messages = EventLog(settings.events_db).read("dataset:hotline_tickets")
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
