"""What a client sends is bounded before it reaches SQL or Python, on both catalog stores.

Each class of hostile input gets a 4xx in the one error body (docs/api.md), never a 5xx:
integers past 31/53 bits or negative, forged cursors, oversized bodies and URLs, JSON
that is not strict or nests too deep, NUL characters, dates at the ends of ``datetime``,
YAML manifests with aliases or deep nesting, malformed websocket messages — and SQL
that does not parse is a 400 that says where.  Against a real uvicorn serving the
exchange world, once over a SQLite catalog and once over a PostgreSQL one (SQLite refuses
integers past 64 bits, PostgreSQL 32-bit columns past 31 and text holding NUL).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from hub.api.common.errors import ErrorBody
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.settings import Settings
from tests.conftest import ExchangeWorld, build_exchange_world, fresh_pg_database

AGENCIES = {
    "gy_12345": "贵阳市12345政务服务便民热线",
    "gy_dsj": "贵阳市大数据发展管理局",
    "gy_hbj": "贵阳市生态环境局",
}
PEOPLE = [
    ("admin", "gy_dsj", "admin"),
    ("steward", "gy_12345", "steward"),
    ("operator", "gy_dsj", "operator"),
    ("developer", "gy_hbj", "developer"),
]

EXTREMES = [
    -(2**64),
    -(2**63),
    -(2**31) - 1,
    -1,
    0,
    2**31,
    2**53,
    2**63 - 1,
    2**63,
    2**64,
    10**40,
]
"""Integers around every width a number meets on its way: int32 and int64 columns,
SQLite's and DuckDB's INTEGER/BIGINT, JSON's safe 2**53."""

FUZZ = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def open_world_hub(folder: Path, catalog_url: str | None, **overrides: Any) -> Hub:
    # A catalog on a server is a production hub: it runs with an audit key (D-audit).
    h = Hub.open(
        Settings(
            home=folder / "home",
            catalog_url=catalog_url,
            bus_poll_s=0.05,
            audit_key="test-audit-key-" + "k" * 32,
            **overrides,
        )
    )
    for agency, name in AGENCIES.items():
        h.store.identity.upsert_agency(agency, name)
    return h


def people(h: Hub) -> dict[str, str]:
    tokens = {}
    for pid, agency, role in PEOPLE:
        h.store.identity.create_principal(pid, agency, pid, role)
        tokens[pid] = h.store.identity.issue_token(pid, ttl=timedelta(hours=2))
    return tokens


class Api:
    """A real uvicorn over the exchange world, and a client for it."""

    def __init__(self, world: ExchangeWorld, url: str) -> None:
        self.world = world
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=60)

    def auth(self, who: str = "admin") -> dict[str, str]:
        return self.world.auth(who)

    def get(self, path: str, who: str = "admin", **kw: Any) -> httpx.Response:
        return self.client.get(path, headers={**self.auth(who), **kw.pop("headers", {})}, **kw)

    def post(self, path: str, who: str = "admin", **kw: Any) -> httpx.Response:
        return self.client.post(path, headers={**self.auth(who), **kw.pop("headers", {})}, **kw)

    def healthy(self) -> None:
        assert self.client.get("/healthz").json()["ok"] is True
        r = self.post("/v1/query", json={"sql": "SELECT count(*) AS n FROM t_open"})
        assert r.status_code == 200 and r.json()["rows"] == [{"n": 300}], r.text


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The exchange world over each catalog store; query limits raised out of the way
    (the limits have their own tests below)."""
    folder = tmp_path_factory.mktemp(f"bounds-{request.param}")
    with fresh_pg_database() if request.param == "postgres" else _no_database() as url:
        h = open_world_hub(folder, url, query_rate=10_000.0, query_burst=10_000)
        try:
            world = build_exchange_world(h, people(h), folder)
            port = free_port()
            with serving(h, port):
                a = Api(world, f"http://127.0.0.1:{port}")
                yield a
                a.client.close()
        finally:
            h.close()


class _no_database:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def assert_error(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    """``r`` is one of ``statuses`` (any 4xx if none) with the one error body."""
    if statuses:
        assert r.status_code in statuses, (r.status_code, r.text[:500])
    else:
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body: dict[str, Any] = r.json()
    assert set(body) <= {"ok", "status", "code", "error", "detail"}, body
    ErrorBody.model_validate(body)
    assert body["ok"] is False and body["status"] == r.status_code, body
    return body


def assert_not_5xx(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.request.url, r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert_error(r)


# -- numbers ---------------------------------------------------------------------------


def _openapi(api: Api) -> dict[str, Any]:
    doc: dict[str, Any] = api.client.get("/openapi.json").json()
    return doc


def _integer(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The integer branch of a parameter or property schema (``anyOf`` with null too)."""
    if schema.get("type") == "integer":
        return schema
    for branch in schema.get("anyOf", []):
        if branch.get("type") == "integer":
            return dict(branch)
    return None


PATH_VALUES = {"dataset_id": "t_open", "feed_id": "t_open", "code": "520102"}


def integer_parameters(doc: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(method, path with values, parameter, its integer schema) of every operation."""
    out = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            filled = path
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    filled = filled.replace(f"{{{p['name']}}}", PATH_VALUES.get(p["name"], "x"))
            for p in op.get("parameters", []):
                schema = _integer(p.get("schema", {}))
                if schema is not None and p["in"] == "query":
                    out.append((method.upper(), filled, p["name"], schema))
    return out


def body_integers(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(model, property, integer schema) of every request body model, dict values too."""
    refs = set()
    for ops in doc["paths"].values():
        for op in ops.values():
            for media in op.get("requestBody", {}).get("content", {}).values():
                ref = media.get("schema", {}).get("$ref") or next(
                    (b["$ref"] for b in media.get("schema", {}).get("anyOf", []) if "$ref" in b),
                    None,
                )
                if ref:
                    refs.add(ref.rsplit("/", 1)[1])
    out = []
    for name in sorted(refs):
        for prop, schema in doc["components"]["schemas"][name].get("properties", {}).items():
            for candidate in (schema, schema.get("additionalProperties") or {}):
                found = _integer(candidate) if isinstance(candidate, dict) else None
                if found is not None:
                    out.append((name, prop, found))
            for branch in schema.get("anyOf", []):
                extra = branch.get("additionalProperties")
                if isinstance(extra, dict) and _integer(extra) is not None:
                    out.append((name, prop, _integer(extra) or {}))
    return out


def test_every_integer_a_client_sends_is_declared_with_bounds(api: Api) -> None:
    """Every integer query parameter and body field declares a minimum and a maximum in
    the OpenAPI document (what pydantic checks before the route runs), none past 2**53."""
    doc = _openapi(api)
    params = integer_parameters(doc)
    fields = body_integers(doc)
    assert len(params) >= 10 and len(fields) >= 2, (params, fields)
    unbounded = [
        (where, name)
        for where, name, schema in [(f"{m} {p}", n, s) for m, p, n, s in params]
        + [(model, prop, s) for model, prop, s in fields]
        if ("minimum" not in schema and "exclusiveMinimum" not in schema)
        or "maximum" not in schema
        or schema["maximum"] > 2**53
    ]
    assert unbounded == []


@FUZZ
@given(data=st.data())
def test_extreme_integers_are_a_4xx_never_a_5xx(api: Api, data: st.DataObject) -> None:
    method, path, name, _ = data.draw(st.sampled_from(integer_parameters(_openapi(api))))
    value = data.draw(st.one_of(st.sampled_from(EXTREMES), st.integers()))
    r = api.client.request(method, path, params={name: str(value)}, headers=api.auth())
    assert_not_5xx(r)


@FUZZ
@given(
    where=st.sampled_from(["max_rows", "versions"]),
    value=st.one_of(st.sampled_from(EXTREMES), st.integers()),
)
def test_extreme_integers_in_a_query_body_are_a_4xx_never_a_5xx(
    api: Api, where: str, value: int
) -> None:
    body: dict[str, Any] = {"sql": "SELECT count(*) AS n FROM t_open"}
    body[where] = value if where == "max_rows" else {"t_open": value}
    assert_not_5xx(api.post("/v1/query", json=body))


@pytest.mark.parametrize(
    "version",
    [str(2**31), str(2**63), str(2**64), "9" * 40, "-1", "0", "²", "٣", "1e3", " 1", ""],
)
def test_a_version_pinned_in_the_query_string_is_bounded(api: Api, version: str) -> None:
    r = api.get(
        "/v1/query", params={"sql": "SELECT 1 AS x FROM t_open", "version": f"t_open={version}"}
    )
    body = assert_error(r, 400, 404)
    assert body["code"] in ("invalid_request", "version_not_found")


def test_bounded_numbers_still_answer(api: Api) -> None:
    """The bounds leave every ordinary value working: the largest of each is accepted."""
    assert api.get("/v1/audit", params={"after": 2**31 - 1}).json() == []
    assert api.get("/v1/datasets/t_open/runs", params={"limit": 500}).status_code == 200
    r = api.get("/v1/datasets/t_open/rows", params={"version": 2**31 - 1})
    assert assert_error(r, 404)["code"] == "version_not_found"
    r = api.post("/v1/query", json={"sql": "SELECT 1 AS x FROM t_open", "max_rows": 2**53 - 1})
    assert r.status_code == 200 and r.json()["row_count"] == 300


# -- cursors ---------------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@FUZZ
@given(
    doc=st.one_of(
        _json,
        st.fixed_dictionaries(
            {"v": st.one_of(st.sampled_from(EXTREMES), _json)},
            optional={"k": _json, "o": st.one_of(st.sampled_from(EXTREMES), _json)},
        ),
    )
)
@example(doc={"v": 10**400})
@example(doc={"v": 1, "o": 2**64})
@example(doc={"v": 2**31})
@example(doc={"v": 1, "k": [[[1]]]})
def test_a_forged_cursor_is_a_400(api: Api, doc: Any) -> None:
    r = api.get("/v1/datasets/t_open/rows", params={"cursor": _cursor(json.dumps(doc).encode())})
    assert_not_5xx(r)


@pytest.mark.parametrize(
    "raw", [b"[" * 6000, b'{"v": 1e999}', b'{"v": NaN}', b"\xff\xfe", b'{"v": 1, "k": ' * 3000]
)
def test_a_cursor_that_is_not_json_is_a_400(api: Api, raw: bytes) -> None:
    r = api.get("/v1/datasets/t_open/rows", params={"cursor": _cursor(raw)})
    assert assert_error(r, 400, 414)["code"] in ("invalid_request", "uri_too_long")


# -- sizes, URLs, JSON -------------------------------------------------------------------


def json_body_operations(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path) of every operation taking a JSON body, path values filled in."""
    out = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                filled = path
                for p in op.get("parameters", []):
                    if p["in"] == "path":
                        value = PATH_VALUES.get(p["name"], "x")
                        filled = filled.replace(f"{{{p['name']}}}", value)
                out.append((method.upper(), filled.replace("{action}", "close")))
    return out


def test_a_body_over_its_limit_is_a_413_whether_declared_or_streamed(api: Api) -> None:
    limit = api.world.hub.settings.max_body_bytes
    big = b'{"sql": "' + b"x" * limit + b'"}'
    headers = {**api.auth(), "content-type": "application/json"}
    r = api.client.post("/v1/query", content=big, headers=headers)
    body = assert_error(r, 413)
    assert body["code"] == "too_large" and body["detail"]["max_body_bytes"] == limit

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    r = api.client.post("/v1/query", content=chunks(), headers=headers)
    assert assert_error(r, 413)["code"] == "too_large"
    api.healthy()


def test_a_feed_batch_may_be_larger_than_other_bodies(api: Api) -> None:
    """Feed batches have their own, larger limit (16 MiB): 2 MiB reaches the route."""
    size = 2 * api.world.hub.settings.max_body_bytes
    events = b"[" + b",".join([b'{"n": 1}'] * (size // 9)) + b"]"
    r = api.post(
        "/v1/feeds/t_open/events", content=events, headers={"content-type": "application/json"}
    )
    assert assert_error(r, 409)["code"] == "conflict"  # t_open is not a feed: the route said so
    over = api.world.hub.settings.feed_max_body_bytes + 1
    r = api.post(
        "/v1/feeds/t_open/events", content=b" " * over, headers={"content-type": "application/json"}
    )
    assert assert_error(r, 413)["code"] == "too_large"


def test_a_url_over_its_limit_is_a_414(api: Api) -> None:
    limit = api.world.hub.settings.max_url_bytes
    r = api.get("/v1/query", params={"sql": "SELECT 1 FROM t_open -- " + "x" * limit})
    assert assert_error(r, 414)["code"] == "uri_too_long"
    r = api.get("/v1/datasets/" + "d" * limit)
    assert assert_error(r, 414)["code"] == "uri_too_long"
    api.healthy()


@pytest.mark.parametrize("depth", [33, 500, 1100, 100_000])
def test_json_nested_past_the_limit_is_a_400_on_every_json_route(api: Api, depth: int) -> None:
    """Nesting inside a field the model allows (an order's ``event``, any value) or as the
    whole body: refused before FastAPI's decoder, pydantic or the response encoder recurse."""
    nested = "[" * depth + "]" * depth
    order = '{"target": "gy_12345", "instructions": "x", "event": {"a": ' + nested + "}}"
    bodies = [nested, order]
    for method, path in json_body_operations(_openapi(api)):
        for text in bodies:
            r = api.client.request(
                method,
                path,
                content=text.encode(),
                headers={**api.auth(), "content-type": "application/json"},
            )
            body = assert_error(r, 400)
            assert body["code"] == "invalid_json", (path, body)
            assert body["detail"]["max_depth"] == api.world.hub.settings.max_json_depth
    api.healthy()


def test_json_nested_up_to_the_limit_passes_the_check(api: Api) -> None:
    """The boundary: a body nesting exactly ``max_json_depth`` levels reaches the route,
    one more level is refused."""
    limit = api.world.hub.settings.max_json_depth

    def order(depth: int) -> bytes:  # the body object, the event, then lists
        nested = "[" * (depth - 2) + "]" * (depth - 2)
        head = '{"target": "gy_12345", "instructions": "x", "event": {"a": '
        return (head + nested + "}}").encode()

    headers = {"content-type": "application/json"}
    r = api.post("/v1/orders", content=order(limit), headers=headers, who="operator")
    assert r.status_code < 500 and (r.status_code < 400 or r.json()["code"] != "invalid_json")
    r = api.post("/v1/orders", content=order(limit + 1), headers=headers, who="operator")
    assert assert_error(r, 400)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ('{"sql": "SELECT 1",}', 1, 19),
        ('{"sql":\n "SELECT 1" "x"}', 2, 13),
        ('{"sql": "\\ud800"}', 1, 10),
        ('{"sql": NaN}', 1, 9),
        ('{"max_rows": 1e999, "sql": "x"}', 1, 14),
        ("\xff", 1, 1),
    ],
)
def test_a_body_that_is_not_strict_json_is_a_400_with_its_position(
    api: Api, text: str, line: int, column: int
) -> None:
    r = api.post(
        "/v1/query",
        content=text.encode("utf-8", "surrogateescape") if text != "\xff" else b"\xff",
        headers={"content-type": "application/json"},
    )
    body = assert_error(r, 400)
    assert body["code"] == "invalid_json"
    assert body["detail"]["position"]["line"] == line
    assert body["detail"]["position"]["column"] == column


@pytest.mark.parametrize(
    ("method", "path", "kw"),
    [
        ("GET", "/v1/datasets/a%00b", {}),
        ("GET", "/v1/catalog/a%00b", {}),
        ("GET", "/v1/runs/a%00b", {}),
        ("GET", "/v1/orders/a%00b", {}),
        ("GET", "/v1/datasets/a%00b/rows", {}),
        ("GET", "/v1/audit?dataset=a%00b", {}),
        ("GET", "/v1/catalog?q=a%00b", {}),
        ("POST", "/v1/orders", {"json": {"target": "gy_12345", "instructions": "a\u0000b"}}),
        (
            "POST",
            "/v1/datasets/t_cond/access-requests",
            {"json": {"purpose": "x", "columns": ["a\x00"]}},
        ),
    ],
)
def test_nul_in_a_url_or_a_json_string_is_a_400(
    api: Api, method: str, path: str, kw: dict[str, Any]
) -> None:
    """PostgreSQL cannot store NUL: a catalog on it answered 500 to any of these."""
    r = api.client.request(method, path, headers=api.auth("operator"), **kw)
    assert "NUL" in assert_error(r, 400)["error"]


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/orders", "deadline", "9999-12-31T23:59:59-14:00"),
        ("/v1/orders", "deadline", "0001-01-01T00:00:00+14:00"),
        ("/v1/orders", "deadline", "0001-01-01T00:00:00"),
        ("/v1/datasets/t_cond/access-requests", "expires_at", "9999-12-31T23:59:59-14:00"),
        ("/v1/datasets/t_cond/access-requests", "expires_at", "0001-01-01T00:00:00+14:00"),
    ],
)
def test_dates_at_the_ends_of_the_calendar_are_a_422(
    api: Api, path: str, field: str, value: str
) -> None:
    body = {"target": "gy_12345", "instructions": "x", "purpose": "关联分析", field: value}
    who = "operator" if "orders" in path else "developer"
    r = api.post(path, json=body, who=who)
    assert assert_error(r, 422)["code"] == "invalid_request"


@pytest.mark.parametrize(
    "yaml_text",
    [
        "id: x\ntitle: " + "[" * 5000,  # the composer recursed per level
        "a: &a ['x', 'x', 'x']\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n",  # aliases
        'id: "a\\0b"\n',  # NUL
        'title: "\\ud800"\n',  # a lone surrogate
    ],
)
def test_a_yaml_manifest_with_aliases_deep_nesting_or_nul_is_a_422(
    api: Api, yaml_text: str
) -> None:
    r = api.post(
        "/v1/datasets", content=yaml_text.encode(), headers={"content-type": "application/yaml"}
    )
    assert assert_error(r, 422)["code"] == "invalid_manifest"


# -- SQL that does not parse ---------------------------------------------------------------


UNPARSABLE = {
    "unterminated string": "SELECT 'abc FROM t_open",
    "unterminated identifier": 'SELECT "abc FROM t_open',
    "unterminated comment": "SELECT 1 AS x FROM t_open /* never closed",
    "10,000 nested parentheses": "SELECT " + "(" * 10_000 + "1" + ")" * 10_000 + " FROM t_open",
    "10,000 open parentheses": "SELECT " + "(" * 10_000 + "1 FROM t_open",
    "30,000 chained operators": "SELECT " + "1+" * 30_000 + "1 FROM t_open",
    "huge text": "SELECT * FROM t_open WHERE category = '" + "噪" * 300_000,
    "huge junk": "SELECT " + "@#" * 400_000,
}


def _cases() -> list[Any]:
    return [pytest.param(sql, id=k) for k, sql in UNPARSABLE.items()]


@pytest.mark.parametrize("sql", _cases())
def test_sql_that_does_not_parse_is_a_400_not_a_crash(api: Api, sql: str) -> None:
    """Whatever the position says: a 400 in the one shape, and the server still answers
    (no RecursionError, no 5xx) — the part of the class that holds for every case."""
    body = assert_error(api.post("/v1/query", json={"sql": sql}), 400)
    assert body["code"] in ("query_rejected", "query_failed"), body
    api.healthy()


@pytest.mark.parametrize("sql", _cases())
def test_sql_that_does_not_parse_is_a_400_with_a_position(api: Api, sql: str) -> None:
    r = api.post("/v1/query", json={"sql": sql})
    body = assert_error(r, 400)
    assert body["code"] in ("query_rejected", "query_failed"), body
    assert "detail" in body and "position" in body["detail"], body
    position = body["detail"]["position"]
    if isinstance(position, dict):
        assert {"line", "column"} <= set(position) or "offset" in position, position
        numbers = [v for v in position.values() if isinstance(v, int)]
    else:
        numbers = [position]
    assert numbers and all(0 <= n <= len(sql) + 1 for n in numbers), position
    api.healthy()


def test_sql_in_the_query_string_that_does_not_parse_is_a_400_with_a_position(api: Api) -> None:
    r = api.get("/v1/query", params={"sql": "SELECT 'abc FROM t_open"})
    assert "position" in assert_error(r, 400)["detail"]


# -- websocket messages ----------------------------------------------------------------------

_ws_value = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EXTREMES),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(["dataset:t_open", "feed:t_open", "block:520102", "orders", "presence"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
_WS_OPS = ["subscribe", "unsubscribe", "ping", "order.ack", "order.progress", "order.close"]
_ws_message = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from([*_WS_OPS, "alert.ack", "alert.resolve", "auth"]), _ws_value)},
    optional={
        k: _ws_value for k in ("channel", "since", "epoch", "filter", "order", "alert", "note")
    }
    | {"data": _ws_value, "id": _ws_value},
)


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=st.lists(st.one_of(_ws_message, st.text(max_size=40)), min_size=1, max_size=5))
@example(messages=['{"op": ["subscribe"]}'])
@example(messages=[{"op": "subscribe", "channel": "dataset:t_open", "since": 2**70}])
@example(messages=["[" * 1100 + "]" * 1100, '{"op": "ping", "id": 1e999}'])
@example(messages=[{"op": "subscribe", "channel": "a\u0000"}])
def test_websocket_messages_never_break_the_connection(api: Api, messages: list[Any]) -> None:
    """Whatever a client sends, each command is answered (an error frame in the one
    shape, status < 500) and the connection keeps serving: a ping after the messages
    gets its pong."""
    host = api.url.removeprefix("http://")
    with connect(f"ws://{host}/v1/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"op": "auth", "token": api.world.tokens["operator"]}))
        assert json.loads(ws.recv(10))["type"] == "welcome"
        for m in messages:
            ws.send(m if isinstance(m, str) else json.dumps(m))
        ws.send(json.dumps({"op": "ping", "id": "sync-after-fuzz"}))
        while True:
            frame = json.loads(ws.recv(10))
            if frame["type"] == "error":
                ErrorBody.model_validate(
                    {k: v for k, v in frame.items() if k in ErrorBody.model_fields}
                )
                assert frame["status"] < 500, frame
            if frame == {"type": "pong", "id": "sync-after-fuzz"}:
                break


def _depth(doc: Any) -> int:
    if isinstance(doc, dict):
        return 1 + max(map(_depth, doc.values()), default=0)
    if isinstance(doc, list):
        return 1 + max(map(_depth, doc), default=0)
    return 0


_nested = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=4), inner, max_size=3)
    ),
    max_leaves=60,
)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(doc=_nested, limit=st.integers(2, 12))
def test_the_depth_check_agrees_with_a_recursive_count(doc: Any, limit: int) -> None:
    """The middleware's check (orjson, then an explicit stack) refuses exactly the
    documents nesting deeper than the limit, brackets inside strings not counted."""
    from hub.api.common.limits import BadJson, check_json

    body = json.dumps(doc).encode()
    try:
        check_json(body, limit)
        refused = False
    except BadJson:
        refused = True
    assert refused == (_depth(doc) > limit)
