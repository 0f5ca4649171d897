"""The quality gate in the embedded runner: policies, quarantine, results, events."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from catalog.datasets.manifest import Manifest, load_manifest, parse_manifest
from catalog.datasets.quality import QualityStore
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from pipelines.freshness import check_freshness
from pipelines.quarantine import discard, quarantine_rows, release
from tests.conftest import file_source
from tests.quality_data import BAD, DUPLICATE, bad_tickets

DEMO = Path(__file__).resolve().parents[1] / "hub" / "demo" / "world" / "hotline_tickets.yaml"
SUITES = Path(__file__).resolve().parents[1] / "expectations" / "suites"
N = 2000


@pytest.fixture
def hotline(tmp_path: Path, hub: Hub) -> Callable[..., Manifest]:
    """Register the demo's hotline manifest reading Parquet files from tmp_path/src."""
    src = tmp_path / "src"
    src.mkdir()

    def make(policy: str = "drop-rows", **overrides: Any) -> Manifest:
        data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
        data["source"] = {**file_source(hub, src, "*.parquet"), "cursor": "ticket_id"}
        data["quality"] = {"policy": policy}
        data.update(overrides)
        manifest = parse_manifest(data, file="hotline.yaml")
        hub.store.register_dataset(manifest)
        return manifest

    return make


def _write(tmp_path: Path, name: str, table: Any) -> None:
    pq.write_table(table, tmp_path / "src" / f"{name}.parquet")


def _quality(hub: Hub) -> QualityStore:
    return hub.store.quality


def test_demo_manifest_names_a_suite_that_loads() -> None:
    from expectations.suite import load_suite

    manifest = load_manifest(DEMO)
    assert manifest.expectations == "hotline_tickets"
    suite = load_suite(manifest.expectations)
    assert len(suite.checks) >= 10


def test_drop_rows_quarantines_failing_rows_and_publishes_the_rest(
    tmp_path: Path, hub: Hub, hotline: Callable[..., Manifest]
) -> None:
    hotline("drop-rows")
    table, expected = bad_tickets(N)
    _write(tmp_path, "a", table)
    run = hub.ingest("hotline_tickets")
    assert run.status == "succeeded", run.error

    bad_rows = len(BAD) + len(DUPLICATE)
    quality = _quality(hub)
    result = quality.get_result(run.id)
    assert result.status == "dropped" and result.rows_checked == N
    assert result.rows_quarantined == bad_rows
    # Nothing is lost: every source row is published or quarantined.
    assert run.rows_read == N
    assert run.rows_written + result.rows_quarantined == N
    published = hub.exchange.query(
        "SELECT count(*) AS n FROM hotline_tickets", _admin(hub)
    ).to_table()
    assert published.column("n")[0].as_py() == N - bad_rows
    # The staged file is published as it was, a position-delete file leaving the failing
    # rows out (D31); none of them is readable.
    files = hub.lake.table("hotline_tickets").inspect.files().to_pylist()
    assert sorted((f["content"], f["record_count"]) for f in files) == [(0, N), (1, bad_rows)]
    ids = hub.exchange.query("SELECT ticket_id FROM hotline_tickets", _admin(hub)).to_table()
    assert set(ids.column(0).to_pylist()).isdisjoint(expected)

    [batch] = quality.batches("hotline_tickets")
    assert batch.status == "held" and batch.rows == bad_rows and batch.run_id == run.id
    # As an admin reads them: personal data masked (the owner's stewards see them raw).
    rows = quarantine_rows(batch, hub.exchange.access(_admin(hub), "hotline_tickets"), limit=100)
    got: dict[int, set[str]] = {}
    for r in rows:
        got.setdefault(r["ticket_id"], set()).update(r["_bh_failed"])
    assert got == expected
    # Personal data is masked in what the admin lists.
    phone_row = next(
        r
        for r in rows
        if "column_values_to_be_valid_mainland_mobile(caller_phone)" in r["_bh_failed"]
    )
    assert phone_row["caller_phone"] == "238****5678"

    # Each expectation's result is stored, with observed values and masked samples.
    by_key = {
        r["expectation_config"]["meta"]["blockhub_key"]: r for r in result.document["results"]
    }
    phone = by_key["column_values_to_be_valid_mainland_mobile(caller_phone)"]
    assert phone["success"] is False and phone["result"]["unexpected_count"] == 1
    assert phone["result"]["partial_unexpected_list"] == ["238****5678"]
    assert by_key["column_values_to_be_unique(ticket_id)"]["result"]["unexpected_count"] == 2
    assert by_key["expect_table_row_count_to_be_between"]["result"]["observed_value"] == N

    # Events: quality.failed, then dataset.updated carrying the gate's summary.
    events = hub.log.read("dataset:hotline_tickets")
    assert [m.type for m in events] == ["quality.failed", "dataset.updated"]
    assert events[0].data["rows_quarantined"] == bad_rows
    assert events[1].data["quality"]["status"] == "dropped"
    assert events[1].data["rows_added"] == N - bad_rows


def test_drop_rows_leaves_out_a_staged_file_that_failed_whole(
    hub: Hub, hotline: Callable[..., Manifest]
) -> None:
    """A staged file none of whose rows passed is not published at all (no delete file
    for it), and its data file is removed; the other keeps its rows and gets one."""
    from pipelines.quality import gate
    from pipelines.staged import Staged

    manifest = hotline("drop-rows")
    mixed, expected = bad_tickets(300)
    broken, _ = bad_tickets(40, seed=5, first_id=9000)
    broken = broken.set_column(
        broken.schema.get_field_index("district_code"),
        "district_code",
        pa.array(["999999"] * broken.num_rows, broken.schema.field("district_code").type),
    )
    hub.lake.ensure_table(manifest.id, mixed.schema)
    files = [
        *hub.lake.stage(manifest.id, "r1", mixed.to_batches(), mixed.schema),
        *hub.lake.stage(manifest.id, "r1", broken.to_batches(), broken.schema),
    ]
    staged = Staged(manifest.id, "r1", files, rows_read=340, cursor=None, previous_cursor=None)
    out = gate(staged, manifest, lake=hub.lake, store=hub.store, publisher=None)
    assert out.quality is not None and out.quality.rows_quarantined == 40 + len(expected) + 1
    data = [f for f in out.files if f.deletes is None]
    deletes = [f for f in out.files if f.deletes is not None]
    assert data == [files[0]] and [d.deletes for d in deletes] == [files[0].path]
    assert deletes[0].rows == len(expected) + 1  # both copies of the duplicated id
    assert not Path(files[1].path).exists()
    hub.lake.discard(out.files)


def test_block_keeps_the_last_good_version(
    tmp_path: Path, hub: Hub, hotline: Callable[..., Manifest]
) -> None:
    hotline("block")
    good, _ = bad_tickets(N)
    good = good.slice(40)  # past the injected rows: a clean batch
    _write(tmp_path, "a", good)
    first = hub.ingest("hotline_tickets")
    assert first.status == "succeeded" and first.version == 1

    bad, _ = bad_tickets(500, seed=12, first_id=10_000)
    _write(tmp_path, "b", bad)
    second = hub.ingest("hotline_tickets")
    assert second.status == "failed"
    assert "quality gate blocked" in (second.error or "")
    assert hub.store.get_version("hotline_tickets").version == 1
    assert hub.lake.current("hotline_tickets").cursor == first_cursor(hub)

    quality = _quality(hub)
    [batch] = quality.batches("hotline_tickets")
    assert batch.rows == 500 and batch.policy == "block"
    # The same bad source rows are read again next time: one copy stays held.
    third = hub.ingest("hotline_tickets")
    assert third.status == "failed"
    held = quality.batches("hotline_tickets", status="held")
    assert len(held) == 1 and held[0].run_id == third.id
    assert [m.type for m in hub.log.read("dataset:hotline_tickets")] == [
        "dataset.updated",
        "quality.failed",
        "quality.failed",
    ]

    # The steward accepts the batch as it is: published, and the cursor moves past it.
    outcome = release(
        held[0].id,
        hub_manifest(hub),
        store=hub.store,
        lake=hub.lake,
        publisher=hub.log.append,
        principal="steward",
        force=True,
    )
    assert outcome.rows_published == 500 and outcome.version == 2 and outcome.new_batch is None
    assert hub.lake.current("hotline_tickets").cursor == held[0].cursor != first_cursor(hub)
    assert quality.actions("hotline_tickets")[0].note == "forced: published without re-validation"
    fourth = hub.ingest("hotline_tickets")  # nothing new past the released batch
    assert fourth.status == "unchanged"


def first_cursor(hub: Hub) -> Any:
    return hub.store.get_version("hotline_tickets", 1).cursor


def test_warn_publishes_everything_and_flags_it(
    tmp_path: Path, hub: Hub, hotline: Callable[..., Manifest]
) -> None:
    hotline("warn")
    table, _ = bad_tickets(N)
    _write(tmp_path, "a", table)
    run = hub.ingest("hotline_tickets")
    assert run.status == "succeeded" and run.rows_written == N
    result = _quality(hub).get_result(run.id)
    assert result.status == "warned" and not result.success and result.rows_quarantined == 0
    updated = hub.log.read("dataset:hotline_tickets")[-1]
    assert updated.type == "dataset.updated" and updated.data["quality"]["status"] == "warned"


def test_release_revalidates_and_discard_is_recorded(
    tmp_path: Path, hub: Hub, hotline: Callable[..., Manifest]
) -> None:
    # A steward's own suite folder: the name-length rule turns out to be too strict.
    suites = tmp_path / "suites"
    shutil.copytree(SUITES, suites)
    hub.settings.suites = suites
    manifest = hotline("drop-rows")
    table, _ = bad_tickets(N)
    _write(tmp_path, "a", table)
    run = hub.ingest("hotline_tickets")
    quality = _quality(hub)
    [batch] = quality.batches("hotline_tickets")
    text = (suites / "hotline_tickets.json").read_text(encoding="utf-8")
    (suites / "hotline_tickets.json").write_text(
        text.replace('"max_value": 4}', '"max_value": 8}'), encoding="utf-8"
    )

    outcome = release(
        batch.id,
        manifest,
        store=hub.store,
        lake=hub.lake,
        publisher=hub.log.append,
        principal="steward",
        suites_dir=suites,
    )
    assert outcome.rows_published == 1  # the long name now passes
    assert outcome.rows_held == batch.rows - 1
    assert outcome.version == 2
    v2 = hub.store.get_version("hotline_tickets", 2)
    assert v2.rows_added == 1 and v2.cursor == hub.store.get_version("hotline_tickets", 1).cursor
    old = quality.get_batch(batch.id)
    assert old.status == "released"
    assert outcome.new_batch is not None
    remaining = quality.get_batch(outcome.new_batch)
    assert remaining.status == "held" and remaining.origin == batch.id

    gone = discard(remaining.id, manifest, store=hub.store, principal="steward", note="test rows")
    assert gone.rows_discarded == batch.rows - 1
    assert quality.get_batch(remaining.id).status == "discarded"
    assert not Path(remaining.path).exists()
    actions = quality.actions("hotline_tickets")
    assert [(a.action, a.principal) for a in actions] == [
        ("discard", "steward"),
        ("release", "steward"),
    ]
    # Still nothing lost: published + discarded = read.
    total = hub.store.get_version("hotline_tickets").total_rows
    assert total + gone.rows_discarded == run.rows_read


def hub_manifest(hub: Hub) -> Manifest:
    return hub.store.get_dataset("hotline_tickets").manifest


def _admin(hub: Hub) -> Any:
    from catalog.identity.store import Principal

    return Principal("admin", "gy_dsj", "admin", "admin")


# --- API: results, report, quarantine -------------------------------------------------


def test_api_quality_report_and_quarantine(
    tmp_path: Path,
    hub: Hub,
    tokens: dict[str, str],
    hotline: Callable[..., Manifest],
    live: str,
) -> None:
    hotline("drop-rows")
    table, _ = bad_tickets(N)
    _write(tmp_path, "a", table)
    run = hub.ingest("hotline_tickets")
    base = f"http://{live}/v1/datasets/hotline_tickets"
    steward = {"Authorization": f"Bearer {tokens['steward']}"}
    outsider = {"Authorization": f"Bearer {tokens['developer']}"}
    with httpx.Client(timeout=30) as http:
        assert http.get(f"{base}/quality").status_code == 401
        denied = http.get(f"{base}/quality", headers=outsider)
        assert denied.status_code == 403 and denied.json()["code"] == "forbidden"

        body = http.get(f"{base}/quality", headers=steward).json()
        assert body["latest"]["run_id"] == run.id and body["latest"]["status"] == "dropped"
        assert body["policy"] == "drop-rows" and body["freshness"]["stale"] is False
        assert len(body["latest"]["results"]) == 15

        page = http.get(f"{base}/quality/report", headers=steward)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "valid_mainland_mobile" in page.text and "238****5678" in page.text
        assert "23812345678" not in page.text

        assert http.get(f"{base}/quarantine", headers=outsider).status_code == 403
        listing = http.get(f"{base}/quarantine", headers=steward).json()
        [batch] = listing["batches"]
        rows = http.get(f"{base}/quarantine/{batch['id']}/rows", headers=steward).json()["rows"]
        assert len(rows) == batch["rows"] == len(BAD) + len(DUPLICATE)
        assert all(r["_bh_failed"] for r in rows)

        bad_body = http.post(
            f"{base}/quarantine/{batch['id']}/release", headers=steward, json={"force": "maybe"}
        )
        assert bad_body.status_code == 422 and bad_body.json()["code"] == "invalid_request"
        gone = http.post(
            f"{base}/quarantine/{batch['id']}/discard", headers=steward, json={"note": "junk"}
        )
        assert gone.status_code == 200 and gone.json()["principal"] == "steward"
        again = http.post(f"{base}/quarantine/{batch['id']}/release", headers=steward, json={})
        assert again.status_code == 409 and again.json()["code"] == "conflict"


# --- freshness ------------------------------------------------------------------------


def test_stale_is_announced_once_per_episode(
    tmp_path: Path, hub: Hub, hotline: Callable[..., Manifest]
) -> None:
    hotline("drop-rows", update_frequency="1h")
    good, _ = bad_tickets(N)
    _write(tmp_path, "a", good.slice(40, 500))
    hub.ingest("hotline_tickets")
    published = hub.store.get_version("hotline_tickets").committed_at

    def stale_events() -> int:
        return sum(m.type == "dataset.stale" for m in hub.log.read("dataset:hotline_tickets"))

    [fresh] = check_freshness(hub.store, hub.log.append, now=published + timedelta(minutes=30))
    assert not fresh.stale and stale_events() == 0
    [stale] = check_freshness(hub.store, hub.log.append, now=published + timedelta(hours=2))
    assert stale.stale and stale.stale_since == published + timedelta(hours=1)
    check_freshness(hub.store, hub.log.append, now=published + timedelta(hours=3))
    assert stale_events() == 1  # one event per episode, not per check

    _write(tmp_path, "b", good.slice(500, 100))
    hub.ingest("hotline_tickets")
    again = hub.store.get_version("hotline_tickets").committed_at
    check_freshness(hub.store, hub.log.append, now=again)  # a new publish ends the episode
    check_freshness(hub.store, hub.log.append, now=again + timedelta(hours=2))
    assert stale_events() == 2


def test_the_app_checks_freshness_periodically(
    tmp_path: Path, hub: Hub, hotline: Callable[..., Manifest]
) -> None:
    hotline("block", update_frequency="1s")  # registered, never published
    time.sleep(1.2)
    hub.settings.freshness_interval_s = 0.2
    with serving(hub, free_port()):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            events = hub.log.read("dataset:hotline_tickets")
            if events:
                break
            time.sleep(0.1)
    assert [m.type for m in events] == ["dataset.stale"]
    assert events[0].data["last_published_at"] is None


# --- the Airflow steps (the DAG's task bodies) -----------------------------------------


def test_steps_block_a_bad_batch_between_extract_and_publish(
    tmp_path: Path, hub: Hub, hotline: Callable[..., Manifest], settings: Any
) -> None:
    from pipelines.steps import extract_step, notify_step, publish_step, validate_step

    hotline("block")
    table, _ = bad_tickets(300)
    _write(tmp_path, "a", table)

    ref = extract_step("hotline_tickets", origin="dag/test", settings=settings)
    gated = validate_step(ref, settings=settings)
    assert "quality gate blocked" in gated["blocked"]
    published = publish_step(gated, settings=settings)
    assert published["version"] is None
    assert notify_step(published, settings=settings) is None
    run = hub.store.get_run(ref["run_id"])
    assert run.status == "failed" and "quality gate blocked" in (run.error or "")
    assert hub.store.versions("hotline_tickets") == []
    [batch] = _quality(hub).batches("hotline_tickets")
    assert batch.rows == 300


def test_steps_hand_drop_rows_delete_files_to_publish(
    tmp_path: Path, hub: Hub, hotline: Callable[..., Manifest], settings: Any
) -> None:
    """Between Airflow tasks the staged files are handed over through the catalog: the
    delete files the gate made must reach the commit, or the failing rows would be
    published."""
    from catalog.datasets.pipelinestate import PipelineState
    from pipelines.steps import extract_step, publish_step, validate_step

    hotline("drop-rows")
    table, expected = bad_tickets(300)
    _write(tmp_path, "a", table)

    ref = extract_step("hotline_tickets", origin="dag/test", settings=settings)
    gated = validate_step(ref, settings=settings)
    files = PipelineState(hub.store).handover(ref["run_id"]).payload["files"]
    bad_rows = len(expected) + 1  # both copies of the duplicated ticket id
    assert [f[3] for f in files if len(f) == 4] == [files[0][0]]
    version = publish_step(gated, settings=settings)["version"]
    assert version == 1
    assert hub.store.get_version("hotline_tickets", 1).total_rows == 300 - bad_rows
    ids = hub.exchange.query("SELECT ticket_id FROM hotline_tickets", _admin(hub)).to_table()
    assert ids.num_rows == 300 - bad_rows
    assert set(ids.column(0).to_pylist()).isdisjoint(expected)


def test_api_release_publishes_and_is_recorded(
    tmp_path: Path,
    hub: Hub,
    tokens: dict[str, str],
    hotline: Callable[..., Manifest],
    live: str,
) -> None:
    hotline("drop-rows")
    table, _ = bad_tickets(N)
    _write(tmp_path, "a", table)
    hub.ingest("hotline_tickets")
    base = f"http://{live}/v1/datasets/hotline_tickets"
    steward = {"Authorization": f"Bearer {tokens['steward']}"}
    with httpx.Client(timeout=60) as http:
        [batch] = http.get(f"{base}/quarantine", headers=steward).json()["batches"]
        done = http.post(
            f"{base}/quarantine/{batch['id']}/release",
            headers=steward,
            json={"force": True, "note": "checked by phone"},
        )
        assert done.status_code == 200, done.text
        assert done.json()["rows_published"] == batch["rows"] and done.json()["version"] == 2
        listing = http.get(f"{base}/quarantine", headers=steward).json()
    assert listing["batches"][0]["status"] == "released"
    [action] = listing["actions"]
    assert (action["action"], action["principal"], action["note"]) == (
        "release",
        "steward",
        "checked by phone",
    )
    assert hub.store.get_version("hotline_tickets").total_rows == N


def test_cli_validate_checks_the_suite(tmp_path: Path) -> None:
    from tests.test_cli import run

    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "hotline_tickets.json").write_text(
        '{"name": "hotline_tickets", "expectations": [{"type": '
        '"expect_column_values_to_be_valid_resident_idd", "kwargs": {"column": "x"}}]}',
        encoding="utf-8",
    )
    ok = run("validate", str(DEMO), home=tmp_path / "h", check=True)
    assert "suite hotline_tickets: 15 expectations" in ok.stdout
    bad = run("validate", str(DEMO), home=tmp_path / "h", env={"BLOCKHUB_SUITES": str(suites)})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "hotline_tickets.json: expectations[0]" in bad.stderr
    assert "expect_column_values_to_be_valid_resident_idd" in bad.stderr
