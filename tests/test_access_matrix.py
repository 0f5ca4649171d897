"""The access matrix, generated from the one list of outbound paths (hub/api/outbound.py):
roles × sharing types × paths.  Each cell sends the path's request (or subscribes to its
channel) as the role and asserts that nothing forbidden leaves: no row outside the
reader's row filter, no column outside its grant, no raw value of a masked column, no
count of rows it may not see, nothing at all of a dataset it may not read.

The world: for each sharing type ``s`` a table ``t_s`` (parquet, ingested: SQL, rows,
versions, ``dataset:`` updates) and a push feed ``f_s`` (events, alerts, orders, block
channel) owned by gy_12345, every value a canary named after ``s`` — so that an answer
listing several datasets (alerts, orders) is judged per dataset.  Rows in district
520102 are inside the row-filter grant, rows in 520103 outside.

A route or websocket channel kind that exists but is not in hub/api/outbound.py fails
:func:`test_every_route_and_channel_kind_is_in_the_outbound_list`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Mount, Route

from catalog.access.masking import mask_value
from catalog.datasets.manifest import parse_manifest
from catalog.domain.channels import CHANNEL_KINDS
from catalog.identity.store import Principal
from hub.api.app import create_app
from hub.api.outbound import PATHS, Outbound, channel_kinds, routes
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.live import dispatch
from hub.live.alert_rules import Rule
from hub.live.alerts import AlertEngine
from hub.settings import Settings
from tests.conftest import file_source
from tests.wsclient import WS

SHARING = {"u": "unconditional", "c": "conditional", "n": "none"}
PREFIX = {"u": "137", "c": "138", "n": "139"}
INSIDE, OUTSIDE = "520102", "520103"
ROLES = {
    # role → (principal id, agency, platform role)
    "owner_steward": ("own", "gy_12345", "steward"),
    "dev_no_grant": ("nog", "gy_hbj", "developer"),
    "dev_column_grant": ("colg", "gy_col", "developer"),
    "dev_row_grant": ("rowg", "gy_row", "developer"),
    "dev_unmask_grant": ("unmg", "gy_unm", "developer"),
    "admin_no_grant": ("adm", "gy_dsj", "admin"),
    "admin_with_grant": ("adm2", "gy_adm", "admin"),
    "operator": ("ops", "gy_dsj", "operator"),
    "field_unit": ("unit7", "gy_hbj", "developer"),
}
# agency → grant scope on t_s and f_s (conditional and unconditional)
GRANTS: dict[str, dict[str, Any]] = {
    "gy_col": {"columns": ["ticket_id", "district_code", "category", "caller_phone", "level"]},
    "gy_row": {"row_filter": {"district_code": [INSIDE]}},
    "gy_unm": {"unmask": ["caller_phone"]},
    "gy_adm": {"unmask": ["caller_phone"]},
}


def phone(s: str, inside: bool, i: int) -> str:
    return f"{PREFIX[s]}{'1111000' if inside else '2222999'}{i}"


def rows_of(s: str) -> list[dict[str, Any]]:
    out = []
    for i in range(1, 8):
        inside = i <= 3
        out.append(
            {
                "ticket_id": i,
                "district_code": INSIDE if inside else OUTSIDE,
                "category": f"{'INSIDEROW' if inside else 'OUTSIDEROW'}_{s}",
                "caller_phone": phone(s, inside, i),
                "note": f"COLSECRET_{s}",
                "level": 9,
                "updated_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=i),
            }
        )
    return out


@dataclass(frozen=True)
class Expect:
    """What one role may learn of one sharing type's datasets."""

    readable: bool
    raw: bool  # raw personal values
    columns: bool  # the column outside a column grant
    rows: bool  # rows outside a row-filter grant, and counts of every row

    def forbidden(self, s: str) -> list[str]:
        rows = rows_of(s)
        inside = [r for r in rows if r["district_code"] == INSIDE]
        outside = [r for r in rows if r["district_code"] == OUTSIDE]
        if not self.readable:
            out = [f"INSIDEROW_{s}", f"OUTSIDEROW_{s}", f"COLSECRET_{s}"]
            out += [r["caller_phone"] for r in rows]
            return out + [mask_value("phone", r["caller_phone"]) or "" for r in rows]
        out = []
        if not self.raw:
            out += [r["caller_phone"] for r in rows]
        if not self.columns:
            out.append(f"COLSECRET_{s}")
        if not self.rows:
            out.append(f"OUTSIDEROW_{s}")
            out += [r["caller_phone"] for r in outside]
            out += [mask_value("phone", r["caller_phone"]) or "" for r in outside]
        assert inside
        return out


def expect(role: str, s: str) -> Expect:
    _, agency, platform = ROLES[role]
    owner = agency == "gy_12345"
    admin = platform == "admin"
    granted = agency in GRANTS
    readable = owner or admin or s == "u" or (s == "c" and granted)
    raw = owner or (readable and s != "n" and "unmask" in GRANTS.get(agency, {}))
    columns = readable and not (s == "c" and agency == "gy_col")
    rows = readable and not (s == "c" and agency == "gy_row")
    return Expect(readable, raw, columns, rows)


COUNT_KEYS = {
    "rows_added", "total_rows", "rows_read", "rows_written", "rows_checked",
    "rows_quarantined", "rows_unexpected", "accepted", "rows", "n", "count", "block_rows",
    "element_count", "unexpected_count", "row_count",
}  # fmt: skip
TOTAL, OUTSIDE_ROWS = 7, 4


_NAMED = re.compile(r"^(?:feed:|dataset:)?[tf]_([ucn])$")


def counts_in(obj: Any, s: str, found: list[tuple[str, Any]], ctx: str | None = None) -> list:
    """Counts in an answer that are about sharing type ``s``'s datasets (an object naming
    another dataset — a block answer's entry, an alert of another feed — is skipped)."""
    if isinstance(obj, dict):
        for key in ("dataset", "id", "source", "channel"):
            m = _NAMED.match(str(obj.get(key, "")))
            if m:
                ctx = m.group(1)
                break
        if ctx not in (None, s):
            return found
        for k, v in obj.items():
            if (k in COUNT_KEYS and isinstance(v, int) and not isinstance(v, bool)) or (
                k == "regions" and isinstance(v, dict) and OUTSIDE in v
            ):
                found.append((k, v))
            counts_in(v, s, found, ctx)
    elif isinstance(obj, list):
        for v in obj:
            counts_in(v, s, found, ctx)
    return found


# -- the world ---------------------------------------------------------------------------


@dataclass
class World:
    hub: Hub
    base: str
    tokens: dict[str, str]
    ids: dict[str, str]  # placeholders of the exercise specs, per sharing type below

    def fill(self, text: str, s: str) -> str:
        values = {
            "dataset": f"t_{s}",
            "feed": f"f_{s}",
            "raw_phone": phone(s, True, 1),
            "unit": "unit7",
            **{k: v for k, v in self.ids.items() if k.endswith(f"_{s}")},
        }
        for key in ("run", "alert", "order", "batch"):
            values[key] = self.ids.get(f"{key}_{s}", "none")
        for k, v in values.items():
            text = text.replace("{" + k + "}", v)
        return text


def _manifest(ident: str, s: str, source: dict[str, Any]) -> Any:
    sharing: dict[str, Any] = {"type": SHARING[s]}
    if s == "n":
        sharing["legal_basis"] = "《政务数据共享管理办法》"
    if s == "c":
        sharing["conditions"] = "for dispatch"
    return parse_manifest(
        {
            "id": ident,
            "title": ident,
            "description": "matrix",
            "agency": "gy_12345",
            "steward": {"name": "王敏"},
            "sharing": sharing,
            "classification": "general",
            "columns": [
                {"name": "ticket_id", "type": "int64"},
                {"name": "district_code", "type": "string"},
                {"name": "category", "type": "string"},
                {"name": "caller_phone", "type": "string", "pii": "phone"},
                {"name": "note", "type": "string"},
                {"name": "level", "type": "int64"},
                {"name": "updated_at", "type": "timestamptz"},
            ],
            "primary_key": ["ticket_id"] if not ident.startswith("f_") else [],
            "block_keys": [{"column": "district_code", "kind": "region"}],
            "source": source,
        }
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("matrix")
    hub = Hub.open(Settings(home=folder / "home", bus_poll_s=0.05))
    for agency in {a for _, a, _ in ROLES.values()}:
        hub.store.identity.upsert_agency(agency, agency)
    tokens = {}
    for role, (pid, agency, platform) in ROLES.items():
        hub.store.identity.create_principal(pid, agency, pid, platform)
        tokens[role] = hub.store.identity.issue_token(pid, ttl=timedelta(hours=2))
    ids: dict[str, str] = {}
    for s in SHARING:
        table = pa.Table.from_pylist(rows_of(s))
        (folder / "src").mkdir(exist_ok=True)
        pq.write_table(table, folder / "src" / f"t_{s}.parquet")
        src = {**file_source(hub, folder / "src", f"t_{s}.parquet", agency="gy_12345"),
               "cursor": "updated_at"}  # fmt: skip
        hub.register(_manifest(f"t_{s}", s, src), file=f"<t_{s}>")
        hub.store.register_dataset(_manifest(f"f_{s}", s, {"connector": "push", "options": {}}))
        run = hub.ingest(f"t_{s}")
        assert run.status == "succeeded", run.error
        ids[f"run_{s}"] = run.id
        if s != "n":
            for agency, scope in GRANTS.items():
                for ident in (f"t_{s}", f"f_{s}"):
                    record = hub.store.get_dataset(ident)
                    g = hub.grants.request(
                        record, agency_id=agency, requested_by="own", purpose="matrix", **scope
                    )
                    hub.grants.approve(g.id, by="own", dataset=record)
    # Feed events, the alerts they raise, and an order carrying one of them.
    rules = [
        Rule(id=f"lvl_{s}", kind="threshold", channel=f"feed:f_{s}", field="level", op=">",
             value=5, key=["district_code", "caller_phone"],
             title="level {level} in {district_code}: {category} {caller_phone} {note}")
        for s in SHARING
    ]  # fmt: skip
    engine = AlertEngine(hub, rules)
    for s in SHARING:
        for r in rows_of(s):
            event = {k: v for k, v in r.items() if k != "updated_at"}
            hub.bus.publish(f"feed:f_{s}", "feed.event", event, {"agency": "gy_12345"})
        for msg in hub.log.read(f"feed:f_{s}", 0, 100):
            engine.evaluate(msg)
        alerts = [a for a in hub.ops.list_alerts(None, 100) if a.rule_id == f"lvl_{s}"]
        assert len(alerts) == TOTAL
        ids[f"alert_{s}"] = next(a.id for a in alerts if OUTSIDE in a.key)
        ops = Principal("ops", "gy_dsj", "ops", "operator")
        outside = rows_of(s)[-1]
        order = dispatch.open_order(
            hub, ops, target="unit7", instructions="check",
            event={"channel": f"feed:f_{s}", **{k: v for k, v in outside.items()
                                                if k != "updated_at"}},
        )  # fmt: skip
        ids[f"order_{s}"] = order.id
    port = free_port()
    with serving(hub, port):
        yield World(hub, f"127.0.0.1:{port}", tokens, ids)
    hub.close()


# -- the matrix --------------------------------------------------------------------------


def _exercise_route(world: World, role: str, s: str, spec: dict[str, Any]) -> str:
    with httpx.Client(
        base_url=f"http://{world.base}",
        headers={"Authorization": f"Bearer {world.tokens[role]}"},
        timeout=30,
    ) as c:
        params = {k: world.fill(str(v), s) for k, v in spec.get("params", {}).items()}
        body = spec.get("json")
        if body is not None:
            body = json.loads(world.fill(json.dumps(body), s))
        r = c.request(spec["method"], world.fill(spec["path"], s), params=params, json=body)
        assert r.status_code < 500, r.text
        return r.text


def _exercise_channel(world: World, role: str, s: str, spec: dict[str, Any]) -> str:
    ws = WS(world.base, world.tokens[role])
    try:
        msg = json.loads(world.fill(json.dumps(spec), s))
        reply = ws.subscribe(msg.pop("channel"), **{k: v for k, v in msg.items() if k != "op"})
        frames = [reply]
        if expect(role, s).readable and reply["channel"].startswith(("feed:", "dataset:")):
            assert reply["type"] == "subscribed", reply  # the cell exercises the channel
        if reply["type"] == "subscribed" and reply["channel"].startswith("block:"):
            for r in rows_of(s):  # block channels are live: publish while subscribed
                event = {k: v for k, v in r.items() if k != "updated_at"}
                world.hub.bus.publish(f"feed:f_{s}", "feed.event", event, {"agency": "gy_12345"})
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                frames.append(ws.recv(0.3))
            except TimeoutError:
                break
        return json.dumps(frames + ws.pending, ensure_ascii=False)
    finally:
        ws.close()


EXERCISED = [p for p in PATHS if p.exercise is not None]
CELLS = [(p, role, s) for p in EXERCISED for role in ROLES for s in SHARING]


@pytest.mark.parametrize(
    ("path", "role", "s"), CELLS, ids=[f"{p.name}-{role}-{s}" for p, role, s in CELLS]
)
def test_matrix(world: World, path: Outbound, role: str, s: str) -> None:
    assert path.exercise is not None
    if path.kind == "route":
        text = _exercise_route(world, role, s, path.exercise)
    else:
        text = _exercise_channel(world, role, s, path.exercise)
    exp = expect(role, s)
    if path.name == "feed-filter" and exp.readable and not exp.raw:
        # The filter names a raw phone: compared on the masked value, it matches nothing
        # (else subscribing with guessed numbers would tell which one is in the data).
        assert '"type": "message"' not in text, f"{role}: a filter matched a masked value"
    for canary in exp.forbidden(s):
        assert canary not in text, f"{path.name} as {role} on {SHARING[s]}: {canary!r} leaked"
    if not exp.rows and path.carries in ("values", "counts"):
        found = counts_in(_json_of(text), s, [])
        bad = [(k, v) for k, v in found if v in (TOTAL, OUTSIDE_ROWS) or k == "regions"]
        assert not bad, f"{path.name} as {role} on {SHARING[s]}: counts of every row {bad}"


def _json_of(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {}


# -- the list is complete --------------------------------------------------------------


def test_every_route_and_channel_kind_is_in_the_outbound_list(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path / "home"))
    listed = routes()
    missing = []
    for r in app.routes:
        if isinstance(r, APIRoute | Route):
            for method in sorted((r.methods or set()) - {"HEAD"}):
                if f"{method} {r.path}" not in listed:
                    missing.append(f"{method} {r.path}")
        elif isinstance(r, APIWebSocketRoute):
            if f"WS {r.path}" not in listed:
                missing.append(f"WS {r.path}")
        elif isinstance(r, Mount):
            if f"GET {r.path}" not in listed:
                missing.append(f"GET {r.path}")
        else:
            missing.append(repr(r))
    assert not missing, f"outbound paths missing from hub/api/outbound.py: {missing}"
    assert set(CHANNEL_KINDS) == channel_kinds(), "a channel kind is not in hub/api/outbound.py"
    for p in PATHS:
        assert p.enforces.strip(), f"{p.name} says nothing about what it enforces"
        if p.carries in ("values", "counts") and p.kind == "channel":
            assert p.exercise is not None or p.match == "presence", p.name


def test_the_matrix_covers_every_value_carrying_read() -> None:
    """Every GET route and channel that carries values or counts is exercised, unless its
    inputs cannot exist in the matrix world (named here, with the test that covers it)."""
    covered_elsewhere = {"block-enterprise": "tests/test_blocks.py",
                         "feed-status": "tests/test_access_paths.py",
                         "metrics": "tests/test_observability.py"}  # fmt: skip
    for p in PATHS:
        reads = p.kind == "channel" or p.match.startswith("GET ")
        if reads and p.carries in ("values", "counts") and p.exercise is None:
            assert p.name in covered_elsewhere, p.name


def test_the_matrix_is_generated_from_the_list() -> None:
    assert {p.name for p, _, _ in CELLS} == {p.name for p in EXERCISED}
    assert len(CELLS) == len(EXERCISED) * len(ROLES) * len(SHARING)
    assert re.fullmatch(r"[a-z_]+", "".join(ROLES)) is not None
