"""Observability: Prometheus metrics, the request id, JSON logs without secrets
(docs/operations.md "Observability").  Readiness: tests/test_readyz.py."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from catalog.datasets.manifest import parse_manifest
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.observability import logs
from hub.settings import Settings
from tests.conftest import file_source, publish_file, ticket_rows
from tests.quality_data import bad_tickets
from tests.wsclient import WS

ROOT = Path(__file__).resolve().parents[1]
METRICS_TOKEN = "m3trics-" + "x" * 40
DEMO = ROOT / "hub" / "demo" / "world" / "hotline_tickets.yaml"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        bus_poll_s=0.05,
        metrics_token=METRICS_TOKEN,
        metrics_catalog_s=0,  # every scrape reads the catalog: the test sees each step
    )


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str, token: str = METRICS_TOKEN) -> Samples:
    r = httpx.get(f"http://{base}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_read_with_the_metrics_token_or_an_admins(
    live: str, tokens: dict[str, str]
) -> None:
    url = f"http://{live}/metrics"
    assert httpx.get(url).status_code == 401
    r = httpx.get(url, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["ok"] is False
    r = httpx.get(url, headers={"Authorization": f"Bearer {tokens['developer']}"})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert (
        "blockhub_" in httpx.get(url, headers={"Authorization": f"Bearer {tokens['admin']}"}).text
    )
    scrape(live)  # the metrics token


def test_metrics_follow_requests_answers_exports_websockets_and_the_bus(
    live: str, hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(ticket_rows(0, 120), src / "a.parquet")
    before = scrape(live)
    publish_file(hub, src / "a.parquet", "tickets")
    admin = {"Authorization": f"Bearer {tokens['admin']}"}

    # A subscriber: the connection and its subscription per channel kind.
    ws = WS(live, tokens["steward"])
    try:
        assert ws.subscribe("dataset:tickets", since=0)["type"] == "subscribed"
        [msg] = ws.messages(1)
        assert msg["event"] == "dataset.updated"
        r = httpx.post(
            f"http://{live}/v1/query",
            json={"sql": "SELECT * FROM tickets", "format": "csv"},
            headers=admin,
        )
        assert r.status_code == 200
        r = httpx.get(f"http://{live}/v1/query", params={"sql": "SELECT 1 AS one"}, headers=admin)
        assert r.status_code == 200
        httpx.get(f"http://{live}/v1/datasets/nope", headers=admin)  # a 404 on a template
        httpx.get(f"http://{live}/no/such/path/{'x' * 20}")  # no route: one label for all
        now = scrape(live)
        assert value(now, "blockhub_ws_connections") == 1
        assert value(now, "blockhub_ws_subscribers", kind="dataset") == 1
    finally:
        ws.close()

    def grew(name: str, **labels: str) -> float:
        return value(now, name, **labels) - value(before, name, **labels)

    assert grew("blockhub_http_requests_total", method="POST", route="/v1/query", status="200")
    assert grew(
        "blockhub_http_requests_total",
        method="GET",
        route="/v1/datasets/{dataset_id}",
        status="404",
    )
    assert grew("blockhub_http_requests_total", method="GET", route="unmatched", status="404")
    assert not [k for k in now if "no/such" in str(k)]  # paths never become labels
    assert grew("blockhub_rows_exported_total", action="export", format="csv") == 120
    assert grew("blockhub_rows_exported_total", action="query", format="json") == 1
    assert grew("blockhub_query_duration_seconds_count", action="export", outcome="ok") == 1
    assert grew("blockhub_query_duration_seconds_count", action="query", outcome="ok") == 1
    assert grew("blockhub_bus_lag_seconds_count") >= 1  # the bus read the new version's event
    assert value(now, "blockhub_event_log_up") == 1
    assert value(now, "blockhub_ingest_runs_total", dataset="tickets", outcome="succeeded") == 1
    assert value(now, "blockhub_ingest_rows_total", dataset="tickets", outcome="succeeded") == 120
    assert value(now, "blockhub_outbox_depth") == 0
    assert value(now, "blockhub_catalog_metrics_up") == 1


def test_metrics_count_quality_failures_and_failed_runs(
    live: str, hub: Hub, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    data["source"] = {**file_source(hub, src, "*.parquet"), "cursor": "ticket_id"}
    data["quality"] = {"policy": "drop-rows"}
    hub.store.register_dataset(parse_manifest(data, file="hotline.yaml"))
    table, expected = bad_tickets(400)
    pq.write_table(table, src / "a.parquet")
    assert hub.ingest("hotline_tickets").status == "succeeded"
    (src / "a.parquet").write_bytes(b"not parquet")
    (src / "b.parquet").write_bytes(b"not parquet either")
    assert hub.ingest("hotline_tickets").status == "failed"
    now = scrape(live)
    assert (
        value(now, "blockhub_quality_failures_total", dataset="hotline_tickets", policy="drop-rows")
        == 1
    )
    held = value(
        now,
        "blockhub_quality_rows_quarantined_total",
        dataset="hotline_tickets",
        policy="drop-rows",
    )
    assert held >= len(expected) > 0
    assert (
        value(now, "blockhub_ingest_runs_total", dataset="hotline_tickets", outcome="failed") == 1
    )


def test_metrics_stay_up_when_the_catalog_cannot_be_read(live: str, hub: Hub) -> None:
    hub.store.engine.dispose()
    catalog = Path(hub.settings.catalog_db.removeprefix("sqlite:///"))
    catalog.rename(catalog.with_suffix(".gone"))
    catalog.mkdir()  # a folder where the file was: every connection fails
    try:
        now = scrape(live)
    finally:
        catalog.rmdir()
        catalog.with_suffix(".gone").rename(catalog)
    assert value(now, "blockhub_catalog_metrics_up") == 0
    assert ("blockhub_ws_connections", ()) in now


# -- request id ---------------------------------------------------------------------------


def test_request_id_is_answered_and_carried_into_audit_entries_and_events(
    live: str, hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(ticket_rows(0, 10), src / "a.parquet")
    publish_file(hub, src / "a.parquet", "tickets")
    pq.write_table(ticket_rows(10, 5), src / "b.parquet")
    steward = {"Authorization": f"Bearer {tokens['steward']}"}

    r = httpx.post(
        f"http://{live}/v1/query",
        json={"sql": "SELECT count(*) FROM tickets"},
        headers={**steward, "X-Request-ID": "ops-4711.a"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "ops-4711.a"
    # A small answer's entry is written once its body is out (hub.api.common.answer).
    deadline = time.monotonic() + 10
    while not (entries := hub.audit.entries(action="query", limit=1)):
        assert time.monotonic() < deadline, "no audit entry of the query"
        time.sleep(0.05)
    assert entries[0].detail["request_id"] == "ops-4711.a"

    # An ingest through the API: the run's entries and its dataset.updated event.
    r = httpx.post(
        f"http://{live}/v1/datasets/tickets/ingest",
        headers={**steward, "X-Request-ID": "ingest-42"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    reads = hub.audit.entries(action="source.read", limit=1)
    assert reads and reads[0].detail["request_id"] == "ingest-42"
    events = hub.log.read("dataset:tickets")
    assert events[-1].type == "dataset.updated"
    assert events[-1].source["request_id"] == "ingest-42"
    assert "request_id" not in events[0].source  # the first ingest ran outside a request

    # An id that could carry anything else into logs is replaced by a new one.
    r = httpx.get(
        f"http://{live}/v1/datasets", headers={**steward, "X-Request-ID": 'a b"c' + "d" * 200}
    )
    rid = r.headers["x-request-id"]
    assert len(rid) == 32 and rid.isalnum()
    r = httpx.get(f"http://{live}/healthz")
    assert r.headers["x-request-id"]


# -- logs ---------------------------------------------------------------------------------


@pytest.fixture
def own_logging() -> Iterator[Callable[..., io.StringIO]]:
    """The hub's log handler installed on a root logger of the test's own (pytest's
    handlers taken off for the duration)."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level

    def install(**kw: Any) -> io.StringIO:
        for h in list(root.handlers):
            root.removeHandler(h)
        stream = io.StringIO()
        assert logs.setup(stream=stream, **kw) is not None
        return stream

    yield install
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_carry_the_request_id_and_never_a_secret(
    own_logging: Callable[..., io.StringIO], tmp_path: Path
) -> None:
    old_key = "old-audit-key-" + "o" * 30
    key_file = tmp_path / "audit.key"
    key_file.write_text("k3y-from-file-" + "f" * 30 + "\n")
    s = Settings(
        home=tmp_path / "home",
        audit_key_file=key_file,
        audit_previous_keys=[old_key],
        metrics_token=METRICS_TOKEN,
        catalog_url="postgresql+psycopg://hub:Pg-Passw0rd-xyz@db.example:5432/blockhub",
        events_url="redis://:Redis-Passw0rd-xyz@bus.example:6379/0?prefix=bh",
        env="production",
    )
    assert s.logs_as_json  # production: JSON unless told otherwise
    stream = own_logging(level="INFO", fmt="json", secrets=logs.settings_secrets(s))
    from catalog import requestid

    token = requestid.set_id("req-1")
    try:
        log = logging.getLogger("blockhub.test")
        log.warning("connecting to %s with %s", s.catalog_db, "k3y-from-file-" + "f" * 30)
        log.error("event log %s down; token %s", s.events_db, METRICS_TOKEN)
        log.info("a URL not from the settings: https://u:Other-Secret-99@x.example/p")
        try:
            raise RuntimeError(f"old key {old_key}")
        except RuntimeError:
            log.exception("failed")
    finally:
        requestid.reset(token)
    logging.getLogger("blockhub.test").info("outside a request")
    text = stream.getvalue()
    for secret in (
        "Pg-Passw0rd-xyz",
        "Redis-Passw0rd-xyz",
        "k3y-from-file-" + "f" * 30,
        METRICS_TOKEN,
        old_key,
        "Other-Secret-99",
    ):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert [line["level"] for line in lines] == ["WARNING", "ERROR", "INFO", "ERROR", "INFO"]
    assert all(line["request_id"] == "req-1" for line in lines[:4])
    assert "request_id" not in lines[4]
    assert lines[0]["message"].startswith("connecting to postgresql+psycopg://hub:***@db.example")
    assert "exc" in lines[3] and "***" in lines[3]["exc"]


def test_text_lines_are_redacted_too(
    own_logging: Callable[..., io.StringIO], tmp_path: Path
) -> None:
    s = Settings(home=tmp_path / "h", audit_key="t3xt-audit-key-" + "t" * 30)
    assert not s.logs_as_json  # development: text by default
    stream = own_logging(level="INFO", fmt="text", secrets=logs.settings_secrets(s))
    logging.getLogger("blockhub.test").warning("key %s", "t3xt-audit-key-" + "t" * 30)
    assert "t3xt-audit-key" not in stream.getvalue()
    assert "[-]: key ***" in stream.getvalue()


def test_serve_logs_json_lines_with_request_ids(
    hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    """The access log of a served request, as JSON, with its id (uvicorn's own lines too)."""
    hub.settings.log_format = "json"
    root = logging.getLogger()
    saved = list(root.handlers)
    for h in saved:
        root.removeHandler(h)
    stream = io.StringIO()
    logs.setup(level="INFO", fmt="json", stream=stream)
    try:
        port = free_port()
        with serving(hub, port):
            r = httpx.get(
                f"http://127.0.0.1:{port}/v1/datasets",
                headers={"Authorization": f"Bearer {tokens['admin']}", "X-Request-ID": "rq-9"},
            )
            assert r.status_code == 200
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    [access] = [
        x for x in lines if x["logger"] == "blockhub.access" and x.get("request_id") == "rq-9"
    ]
    assert access["route"] == "/v1/datasets" and access["status"] == 200
    assert access["method"] == "GET" and access["duration_ms"] >= 0
    assert all(set(x) >= {"ts", "level", "logger", "message"} for x in lines)
