"""The http_api connector against a real local JSON API under uvicorn: pagination styles,
retries on 429/5xx, Retry-After, the rate limit, auth from a secret, incremental runs."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pyarrow as pa
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from catalog.datasets.manifest import Manifest
from catalog.errors import ConnectorError
from connectors.http_api import HttpApiConnector, _retry_after, dig
from hub.api.server import free_port
from hub.assembly.context import Hub
from hub.demo.sampleworld import hospital_beds

TOKEN = "s3cret-beds-token"
BEIJING = timezone(timedelta(hours=8))


@dataclass
class BedsApi:
    """State of the fake-free, real hospital API: its rows and what it was asked."""

    reports: int = 2
    fail_first: dict[tuple[str, str], int] = field(default_factory=dict)
    retry_after: str | None = None
    seen: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    params: list[dict[str, str]] = field(default_factory=list)
    failed: set[tuple[str, str]] = field(default_factory=set)

    def rows(self, since: str | None) -> list[dict[str, Any]]:
        out = []
        for r in hospital_beds(self.reports).to_pylist():
            r["updated_at"] = r["updated_at"].astimezone(BEIJING).isoformat()
            out.append(r)
        if since:
            cut = datetime.fromisoformat(since)
            # Inclusive on purpose, as many real APIs are: the connector must drop the repeat.
            out = [r for r in out if datetime.fromisoformat(r["updated_at"]) >= cut]
        return out


def _app(api: BedsApi) -> Starlette:
    def guard(request: Request, kind: str, key: str) -> Response | None:
        api.seen[kind].append(time.monotonic())
        api.params.append(dict(request.query_params))
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": "bad token"}, status_code=401)
        if kind == "down":
            return JSONResponse({"error": "maintenance"}, status_code=503)
        status = api.fail_first.get((kind, key))
        if status and (kind, key) not in api.failed:
            api.failed.add((kind, key))
            headers = {"Retry-After": api.retry_after} if status == 429 and api.retry_after else {}
            return JSONResponse({"error": "try later"}, status_code=status, headers=headers)
        return None

    def since(request: Request) -> str | None:
        return request.query_params.get("updated_since")

    async def page(request: Request) -> Response:
        n, size = int(request.query_params["page"]), int(request.query_params["size"])
        if (bad := guard(request, "page", str(n))) is not None:
            return bad
        rows = api.rows(since(request))[(n - 1) * size : n * size]
        return JSONResponse({"data": {"items": rows, "page": n}})

    async def offset(request: Request) -> Response:
        off, limit = int(request.query_params["offset"]), int(request.query_params["limit"])
        if (bad := guard(request, "offset", str(off))) is not None:
            return bad
        return JSONResponse({"results": api.rows(since(request))[off : off + limit]})

    async def cursor(request: Request) -> Response:
        start = int(request.query_params.get("cursor", "0"))
        if (bad := guard(request, "cursor", str(start))) is not None:
            return bad
        rows = api.rows(since(request))
        nxt = start + 100 if start + 100 < len(rows) else None
        return JSONResponse(
            {
                "items": rows[start : start + 100],
                "meta": {"next": None if nxt is None else str(nxt)},
            }
        )

    async def next_body(request: Request) -> Response:
        after = int(request.query_params.get("after", "0"))
        if (bad := guard(request, "next", str(after))) is not None:
            return bad
        rows = api.rows(None)
        link = f"/next?after={after + 150}" if after + 150 < len(rows) else None
        return JSONResponse({"items": rows[after : after + 150], "links": {"next": link}})

    async def next_header(request: Request) -> Response:
        after = int(request.query_params.get("after", "0"))
        if (bad := guard(request, "link", str(after))) is not None:
            return bad
        rows = api.rows(None)
        headers = {}
        if after + 150 < len(rows):
            headers["Link"] = f'<{request.base_url}link?after={after + 150}>; rel="next"'
        return JSONResponse(rows[after : after + 150], headers=headers)

    async def down(request: Request) -> Response:
        return guard(request, "down", "") or JSONResponse([])

    return Starlette(
        routes=[
            Route("/page", page),
            Route("/offset", offset),
            Route("/cursor", cursor),
            Route("/next", next_body),
            Route("/link", next_header),
            Route("/down", down),
        ]
    )


@pytest.fixture
def beds() -> Iterator[tuple[BedsApi, str]]:
    """A real hospital-beds API on 127.0.0.1 and its base URL."""
    api = BedsApi()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app(api), "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "beds API did not start"
        time.sleep(0.02)
    yield api, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _read(options: dict[str, Any]) -> pa.Table:
    opts = {"headers": {"Authorization": f"Bearer {TOKEN}"}, **options}
    with HttpApiConnector(opts) as c:
        schema = c.discover()
        batches = list(c.read())
    assert "report_id" in schema.names
    return pa.Table.from_batches(batches)


def _ids(table: pa.Table) -> list[int]:
    return [int(v) for v in table.column("report_id").to_pylist()]


def test_page_style_survives_500_and_429_and_honours_retry_after(
    beds: tuple[BedsApi, str],
) -> None:
    api, base = beds
    api.fail_first = {("page", "2"): 500, ("page", "3"): 429}
    api.retry_after = "1"
    table = _read(
        {
            "url": f"{base}/page",
            "records": "data.items",
            "pagination": {"style": "page", "size": 100},
            "retry": {"backoff_s": 0.05},
        }
    )
    assert _ids(table) == list(range(1, 561))
    pages = [p["page"] for p in api.params]
    # discover's page 1 is reused by read; 2 and 3 are each asked twice; 6 is the short last.
    assert pages == ["1", "2", "2", "3", "3", "4", "5", "6"]
    failed_at, retried_at = api.seen["page"][3], api.seen["page"][4]
    assert retried_at - failed_at >= 0.95, "Retry-After: 1 was not honoured"


@pytest.mark.parametrize(
    ("options", "kind"),
    [
        (
            {"url": "/offset", "records": "results", "pagination": {"style": "offset"}},
            "offset",
        ),
        (
            {
                "url": "/cursor",
                "records": "items",
                "pagination": {"style": "cursor", "cursor_path": "meta.next"},
            },
            "cursor",
        ),
        (
            {
                "url": "/next",
                "records": "items",
                "pagination": {"style": "next_link", "next_path": "links.next"},
            },
            "next",
        ),
        ({"url": "/link", "pagination": {"style": "next_link"}}, "link"),
    ],
    ids=["offset", "cursor", "next_link-body", "next_link-header"],
)
def test_pagination_styles_read_every_row_once(
    beds: tuple[BedsApi, str], options: dict[str, Any], kind: str
) -> None:
    api, base = beds
    first_key = "0"
    api.fail_first = {(kind, first_key): 502}
    table = _read({**options, "url": base + options["url"], "retry": {"backoff_s": 0.01}})
    assert _ids(table) == list(range(1, 561))
    assert table.column("hospital_name")[0].as_py().startswith("贵阳市")


def test_rate_limit_spaces_requests(beds: tuple[BedsApi, str]) -> None:
    api, base = beds
    _read(
        {
            "url": f"{base}/offset",
            "records": "results",
            "pagination": {"style": "offset", "limit": 50},
            "rate_limit": 20,
        }
    )
    times = api.seen["offset"]
    assert len(times) == 12
    # 12 requests at 20/s span at least 11 × 50 ms; arrival jitter on a busy box can
    # shorten one gap, never the whole span.
    assert times[-1] - times[0] >= 11 * 0.05 * 0.95
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sorted(gaps)[len(gaps) // 2] >= 0.045, gaps


def test_gives_up_after_bounded_attempts_without_leaking_the_secret(
    beds: tuple[BedsApi, str], caplog: pytest.LogCaptureFixture
) -> None:
    api, base = beds
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConnectorError) as e:
        _read({"url": f"{base}/down?key=abc", "retry": {"attempts": 3, "backoff_s": 0.01}})
    assert len(api.seen["down"]) == 3
    assert "gave up after 3 attempt(s): HTTP 503" in e.value.message
    assert f"{base}/down" in e.value.message and "key=abc" not in e.value.message
    assert TOKEN not in e.value.message and TOKEN not in caplog.text


def test_refused_credentials_fail_at_once(beds: tuple[BedsApi, str]) -> None:
    api, base = beds
    with (
        pytest.raises(ConnectorError, match=r"HTTP 401 Unauthorized.*credentials"),
        HttpApiConnector(
            {"url": f"{base}/page?page=1&size=5", "headers": {"Authorization": "Bearer no"}}
        ) as c,
    ):
        c.discover()
    assert len(api.seen["page"]) == 1


def test_a_field_missing_from_a_whole_page_reads_as_null(beds: tuple[BedsApi, str]) -> None:
    api, base = beds
    rows = api.rows
    # Page 2 (records 101-200) carries no beds_free at all, as sparse APIs do.
    api.rows = lambda since: [  # type: ignore[method-assign]
        {k: v for k, v in r.items() if not (k == "beds_free" and 100 < r["report_id"] <= 200)}
        for r in rows(since)
    ]
    table = _read({"url": f"{base}/page", "records": "data.items", "pagination": {"style": "page"}})
    assert table.num_rows == 560
    assert table.column("beds_free").null_count == 100


def test_records_path_must_hold_a_list(beds: tuple[BedsApi, str]) -> None:
    _, base = beds
    with pytest.raises(ConnectorError, match=r"records path data\.page holds a int"):
        _read({"url": f"{base}/page?page=1&size=5", "records": "data.page"})


@pytest.fixture
def beds_manifest(
    hub: Hub, make_manifest: Callable[..., Manifest], beds: tuple[BedsApi, str]
) -> Manifest:
    _, base = beds
    # The API, and the token in its header, are the big-data bureau's profile.
    hub.sources.sources.add_profile(
        "gy_dsj",
        "beds_api",
        "http",
        protected=hub.sources.protected,
        settings={"base_url": base},
        secrets={"headers": {"Authorization": f"Bearer {TOKEN}"}},
    )
    return make_manifest(
        id="hospital_beds",
        title="医院床位实时可用情况",
        agency="gy_dsj",
        columns=[
            {"name": "report_id", "type": "int64"},
            {"name": "hospital_id", "type": "string"},
            {"name": "hospital_name", "type": "string"},
            {"name": "district_code", "type": "string"},
            {"name": "ward", "type": "string"},
            {"name": "beds_total", "type": "int32"},
            {"name": "beds_free", "type": "int32"},
            {"name": "updated_at", "type": "timestamptz"},
        ],
        primary_key=["report_id"],
        source={
            "connector": "http_api",
            "profile": "beds_api",
            "cursor": "updated_at",
            "options": {
                "path": "page",
                "records": "data.items",
                "pagination": {"style": "page", "size": 200},
                "since_param": "updated_since",
                "retry": {"backoff_s": 0.01},
            },
        },
    )


def test_incremental_ingest_by_cursor_adds_only_new_reports(
    hub: Hub, beds: tuple[BedsApi, str], beds_manifest: Manifest
) -> None:
    api, _ = beds
    hub.store.register_dataset(beds_manifest)
    first = hub.ingest("hospital_beds")
    assert first.status == "succeeded", first.error
    assert first.rows_written == 560
    api.reports = 3
    api.params.clear()
    second = hub.ingest("hospital_beds")
    assert second.status == "succeeded", second.error
    assert second.rows_written == 280
    # discover reads the plain first page for the schema; every read page carries the cursor.
    assert "updated_since" not in api.params[0]
    assert {p.get("updated_since") for p in api.params[1:]} == {"2024-06-01T01:00:00+00:00"}
    table = hub.lake.table("hospital_beds").scan().to_arrow()
    assert sorted(table.column("report_id").to_pylist()) == list(range(1, 841))
    assert table.schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert hub.store.get_version("hospital_beds").total_rows == 840


def test_failing_api_is_a_failed_run_and_publishes_nothing(
    hub: Hub, beds: tuple[BedsApi, str], beds_manifest: Manifest
) -> None:
    opts = {**beds_manifest.source.options, "path": "down", "retry": {"attempts": 2}}
    broken = beds_manifest.model_copy(
        update={"source": beds_manifest.source.model_copy(update={"options": opts})}
    )
    hub.store.register_dataset(broken)
    run = hub.ingest("hospital_beds")
    assert run.status == "failed"
    assert run.error is not None and "HTTP 503" in run.error and TOKEN not in run.error
    assert hub.store.versions("hospital_beds") == []


def test_retry_after_and_records_paths() -> None:
    assert _retry_after("3") == 3.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (_retry_after(soon) or 0) <= 30
    assert _retry_after("not a date") is None and _retry_after(None) is None
    doc = {"data": {"items": [{"a": 1}], "pages": [{"next": "x"}]}}
    assert dig(doc, "data.items") == [{"a": 1}]
    assert dig(doc, "data.pages.0.next") == "x"
    assert dig(doc, "data.missing.deeper") is None
