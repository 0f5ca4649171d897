"""Block answers (塊數據) against hand-computed counts, under the sharing rules.

One sample world per module (the demo's manifests, sources written under tmp), served by a
real uvicorn.  Expected numbers are computed here with pyarrow from the source files the
agencies "exported", never from blockhub's own answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from websockets.sync.client import ClientConnection, connect

from catalog.domain.regions import load_regions
from catalog.identity.store import Principal
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.demo.blocks import BLOCK_DATASETS, add_readings, write_sources
from hub.demo.sampleworld import hotline_tickets
from hub.demo.synth import GUIYANG_DISTRICT_CODES
from hub.demo.tour import AGENCIES, MANIFESTS, configure_sources
from hub.exchange.blocks import Blocks
from hub.settings import Settings

SEED = 7
CLOSED = ("已办结", "已回访")
NANMING = "520102"
GUIYANG = "520100"


@dataclass
class World:
    hub: Hub
    folder: Path
    base: str
    tokens: dict[str, str]
    next_ticket: int = 1
    clock: datetime = datetime(2024, 5, 1, tzinfo=UTC)

    def http(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://{self.base}",
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=30,
        )

    def add_tickets(self, n: int) -> Path:
        end = self.clock + timedelta(days=1)
        table = hotline_tickets(
            n, seed=SEED + self.next_ticket, start=self.clock, end=end, first_id=self.next_ticket
        )
        path = self.folder / "hotline" / f"tickets-{self.next_ticket:09d}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pacsv.write_csv(table, path)
        self.next_ticket += n
        self.clock = end
        return path

    def ingest(self, dataset_id: str) -> Any:
        run = self.hub.ingest(dataset_id)
        assert run.status == "succeeded", run.error
        return run

    def tickets(self) -> pa.Table:
        return pacsv.read_csv(
            self.folder / "hotline" / "tickets-000000001.csv",
            convert_options=pacsv.ConvertOptions(column_types={"district_code": pa.string()}),
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("blocks")
    hub = Hub.open(Settings(home=root / "home", bus_poll_s=0.05))
    for agency_id, name in AGENCIES.items():
        hub.store.identity.upsert_agency(agency_id, name)
    people = [
        ("admin", "gy_dsj", "admin"),
        ("steward", "gy_12345", "steward"),  # owns the conditional hotline tickets
        ("env_dev", "gy_hbj", "developer"),  # environment bureau: no grant on tickets
    ]
    tokens = {}
    for pid, agency, role in people:
        hub.store.identity.create_principal(pid, agency, pid, role)
        tokens[pid] = hub.store.identity.issue_token(pid, ttl=timedelta(hours=1))
    folder = root / "world"
    configure_sources(hub, folder, mqtt_prefix=f"blockhub-test/{root.name}")
    hub.register_manifests(MANIFESTS)
    port = free_port()
    w = World(hub, folder, f"127.0.0.1:{port}", tokens)
    w.add_tickets(3_000)
    write_sources(folder, seed=SEED, readings=20 * 24 * 3, companies=2_000)
    for dataset_id in ("hotline_tickets", *BLOCK_DATASETS):
        w.ingest(dataset_id)
    with serving(hub, port):
        yield w
    hub.close()


def entry(answer: dict[str, Any], dataset: str) -> dict[str, Any]:
    found = [d for d in answer["datasets"] if d["dataset"] == dataset]
    assert len(found) == 1, [d["dataset"] for d in answer["datasets"]]
    return found[0]


def figure(d: dict[str, Any], name: str) -> Any:
    fig = next(f for f in d["figures"] if f["name"] == name)
    if fig["by"]:
        return {v["key"]: v["value"] for v in fig["values"]}
    return fig["value"]


def district_of_address(address: str) -> str:
    """By hand: the district whose full name the generated address spells out."""
    regions = load_regions()
    hits = [c for c in GUIYANG_DISTRICT_CODES if regions[c].name in address]
    assert len(hits) == 1, address
    return hits[0]


def test_district_block_matches_hand_counts(world: World) -> None:
    tickets = world.tickets()
    stations = pacsv.read_csv(world.folder / "air" / "stations.csv")
    readings = pq.read_table(world.folder / "air" / "readings-000001.parquet")
    companies = pacsv.read_csv(
        world.folder / "enterprises" / "enterprises.csv",
        convert_options=pacsv.ConvertOptions(column_types={"district_code": pa.string()}),
    )
    station_district = {
        s["station_id"]: district_of_address(s["address"]) for s in stations.to_pylist()
    }
    in_nanming = [s for s, d in station_district.items() if d == NANMING]

    with world.http("admin") as http:
        answer = http.get(f"/v1/blocks/region/{NANMING}").json()
    assert answer["ok"] is True
    assert answer["block"]["full_name"] == "贵州省贵阳市南明区"
    assert answer["block"]["parent"]["code"] == GUIYANG
    assert answer["versions"] == {
        d: v.version for d, v in world.hub.store.latest_versions().items()
    }

    t = [r for r in tickets.to_pylist() if r["district_code"] == NANMING]
    hot = entry(answer, "hotline_tickets")
    assert hot["rows"] == len(t)
    assert hot["latest"].startswith(max(r["updated_at"] for r in t).isoformat()[:19])
    open_t = [r for r in t if r["status"] not in CLOSED]
    assert figure(hot, "open") == len(open_t)
    by_cat = figure(hot, "open_by_category")
    assert {k: v for k, v in by_cat.items() if v} == dict(Counter(r["category"] for r in open_t))
    assert hot["rows_href"] == (
        "/v1/datasets/hotline_tickets/rows"
        "?filter=district_code%3Agte%3A520102&filter=district_code%3Alt%3A520103"
    )
    with world.http("admin") as http:  # the link leads to exactly the block's rows
        rows = http.get(hot["rows_href"] + "&limit=10000&format=json").json()
    assert len(rows["rows"]) == len(t)

    st = entry(answer, "air_stations")
    assert st["rows"] == len(in_nanming) == 2
    assert st["key"] == {"column": "address_region_code", "kind": "address"}

    rd = entry(answer, "air_readings")
    mine = [r for r in readings.to_pylist() if r["station_id"] in in_nanming]
    assert rd["rows"] == len(mine)
    latest = {}
    for r in sorted(mine, key=lambda r: r["measured_at"]):
        latest[r["station_id"]] = r["aqi"]
    assert figure(rd, "latest_aqi") == latest
    assert figure(rd, "max_aqi") == max(r["aqi"] for r in mine)

    ent = entry(answer, "enterprises")
    c = [r for r in companies.to_pylist() if r["district_code"] == NANMING]
    assert ent["rows"] == len(c)
    assert figure(ent, "active") == sum(r["status"] in ("存续", "在业") for r in c)
    assert figure(ent, "by_status") == dict(Counter(r["status"] for r in c))
    assert ent["latest"] == max(r["established"] for r in c).isoformat()  # a date stays one

    pop = entry(answer, "district_population")
    assert pop["rows"] == 5 and figure(pop, "latest_year") == 2024

    towns = [r for r in load_regions().values() if r.code.startswith(NANMING)]
    reg = entry(answer, "regions")  # the division itself and its townships
    assert reg["rows"] == len(towns)
    assert figure(reg, "divisions") == dict(Counter(r.level for r in towns))


def test_city_drill_down_and_township(world: World) -> None:
    tickets = world.tickets()
    stations = pacsv.read_csv(world.folder / "air" / "stations.csv").to_pylist()
    address = next(s["address"] for s in stations if district_of_address(s["address"]) == NANMING)
    town = next(
        r.code
        for r in load_regions().values()
        if r.parent == NANMING and r.level == "township" and r.name in address
    )
    with world.http("admin") as http:
        city = http.get(f"/v1/blocks/region/{GUIYANG}/children").json()
        same = http.get(f"/v1/blocks/region/{GUIYANG}", params={"children": "true"}).json()
        township = http.get(f"/v1/blocks/region/{town}").json()
    assert [c["code"] for c in city["children"]] == sorted(GUIYANG_DISTRICT_CODES)
    assert [c["code"] for c in same["children"]] == [c["code"] for c in city["children"]]
    hot = entry(city, "hotline_tickets")
    assert hot["rows"] == tickets.num_rows
    expected = Counter(tickets["district_code"].to_pylist())
    assert {c["code"]: c["rows"] for c in hot["children"]} == dict(expected)
    totals = {c["code"]: c["rows"] for c in city["children"]}
    assert totals[NANMING] == sum(
        next((x["rows"] for x in d["children"] if x["code"] == NANMING), 0)
        for d in city["datasets"]
    )
    # A township: the station resolved to 12 digits is in it; district-level rows are not.
    assert township["block"]["level"] == "township"
    assert entry(township, "air_stations")["rows"] == 1
    assert entry(township, "hotline_tickets")["rows"] == 0


def test_enterprise_block(world: World) -> None:
    companies = pacsv.read_csv(world.folder / "enterprises" / "enterprises.csv").to_pylist()
    one = companies[17]
    with world.http("env_dev") as http:
        answer = http.get(f"/v1/blocks/enterprise/{one['credit_code']}").json()
        bad = http.get("/v1/blocks/enterprise/91520102XXXXXXXXXX")
    assert answer["block"]["registered_in"]["code"] == one["credit_code"][2:8]
    ent = entry(answer, "enterprises")
    assert ent["rows"] == 1 and figure(ent, "by_status") == {one["status"]: 1}
    assert answer["versions"] == {"enterprises": 1}
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"


def test_bad_codes_are_clean_errors(world: World) -> None:
    with world.http("admin") as http:
        r = http.get("/v1/blocks/region/5201")
        assert r.status_code == 400 and r.json()["ok"] is False
        r = http.get("/v1/blocks/region/999999")
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = httpx.get(f"http://{world.base}/v1/blocks/region/520102")
    assert r.status_code == 401


def test_no_grant_no_trace_of_a_conditional_dataset(world: World) -> None:
    with world.http("env_dev") as http:
        for path in (
            f"/v1/blocks/region/{NANMING}",
            f"/v1/blocks/region/{GUIYANG}?children=true",
            "/v1/blocks/region/520000",
        ):
            r = http.get(path)
            assert r.status_code == 200
            assert "hotline" not in r.text and "gy_12345" not in r.text, path
            assert {d["dataset"] for d in r.json()["datasets"]} == {
                "regions",
                "air_readings",
                "air_stations",
                "enterprises",
                "district_population",
            }
    with world.http("steward") as http:  # the owner sees it
        assert entry(http.get(f"/v1/blocks/region/{NANMING}").json(), "hotline_tickets")["rows"]


def test_block_figures_equal_the_callers_own_sql(world: World) -> None:
    """A block figure is the exchange's answer for that caller: the same SQL over the
    same dataset gives the same value (so grants, masking and row filters carry over)."""
    sql = (
        "SELECT min(phone) AS phone_min, min(legal_rep) AS name_min, count(*) AS c "
        "FROM enterprises "
        "WHERE starts_with(district_code, '520102')"
    )
    with world.http("env_dev") as http:
        direct = http.post("/v1/query", json={"sql": sql}).json()["rows"][0]
    principal = world.hub.store.identity.get_principal("env_dev")
    manifest = world.hub.store.get_dataset("enterprises").manifest
    extra = manifest.model_copy(
        update={
            "block_figures": [
                *manifest.block_figures,
                *[
                    type(manifest.block_figures[0])(name=n, aggregate=a)
                    for n, a in (("phone_min", "min(phone)"), ("name_min", "min(legal_rep)"))
                ],
            ]
        }
    )
    world.hub.store.register_dataset(extra)
    try:
        answer = Blocks(world.hub.exchange).region(NANMING, principal)
    finally:
        world.hub.store.register_dataset(manifest)
    ent = entry(answer, "enterprises")
    assert (figure(ent, "phone_min"), figure(ent, "name_min"), ent["rows"]) == (
        direct["phone_min"],
        direct["name_min"],
        direct["c"],
    )


def test_a_broken_figure_spoils_only_its_dataset(world: World) -> None:
    manifest = world.hub.store.get_dataset("district_population").manifest
    fig = type(manifest.block_figures[0])(name="broken", aggregate="sum(no_such_column)")
    world.hub.store.register_dataset(
        manifest.model_copy(update={"block_figures": [*manifest.block_figures, fig]})
    )
    try:
        with world.http("env_dev") as http:
            answer = http.get(f"/v1/blocks/region/{NANMING}").json()
    finally:
        world.hub.store.register_dataset(manifest)
    pop = entry(answer, "district_population")
    assert pop["error"]["code"] == "query_failed" and "rows" not in pop
    assert "district_population" not in answer["versions"]
    assert entry(answer, "enterprises")["rows"] > 0 and len(answer["datasets"]) == 5


def test_masking_holds_in_block_figures(world: World) -> None:
    principal = world.hub.store.identity.get_principal("env_dev")
    manifest = world.hub.store.get_dataset("enterprises").manifest
    fig = type(manifest.block_figures[0])(name="phones", aggregate="min(phone)")
    world.hub.store.register_dataset(
        manifest.model_copy(update={"block_figures": [*manifest.block_figures, fig]})
    )
    try:
        answer = Blocks(world.hub.exchange).region(NANMING, principal)
    finally:
        world.hub.store.register_dataset(manifest)
    phone = figure(entry(answer, "enterprises"), "phones")
    assert phone[3:7] == "****", phone


def _recv(ws: ClientConnection, timeout: float) -> dict[str, Any] | None:
    """The next message that is not a heartbeat (one comes every ``ws_heartbeat_s``, and a
    slow machine keeps a socket open that long), or ``None`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = dict(json.loads(ws.recv(max(0.0, deadline - time.monotonic()))))
        except TimeoutError:
            return None
        if msg.get("type") != "heartbeat":
            return msg


def _block_ws(world: World, who: str, channel: str) -> ClientConnection:
    ws = connect(f"ws://{world.base}/v1/ws")
    ws.send(json.dumps({"op": "auth", "token": world.tokens[who]}))
    assert json.loads(ws.recv(10))["type"] == "welcome"
    ws.send(json.dumps({"op": "subscribe", "channel": channel}))
    return ws


def test_block_channels_carry_updates_in_the_block_under_the_rules(world: World) -> None:
    owner = _block_ws(world, "steward", f"block:{NANMING}")
    outsider = _block_ws(world, "env_dev", f"block:{NANMING}")
    elsewhere = _block_ws(world, "steward", "block:520103000000")  # 云岩区, 12-digit form
    admin = _block_ws(world, "admin", f"block:{NANMING}")
    try:
        sub = [json.loads(ws.recv(10)) for ws in (owner, outsider, elsewhere, admin)]
        assert sub[0]["channel"] == f"block:{NANMING}" and "hotline_tickets" in sub[0]["datasets"]
        assert "hotline_tickets" not in sub[1]["datasets"]
        assert sub[2]["channel"] == "block:520103"

        path = world.add_tickets(400)
        run = world.ingest("hotline_tickets")
        table = pacsv.read_csv(
            path, convert_options=pacsv.ConvertOptions(column_types={"district_code": pa.string()})
        )
        in_block = pc.sum(pc.equal(table["district_code"], NANMING)).as_py()
        msg = _recv(owner, 10)
        assert msg is not None and msg["channel"] == f"block:{NANMING}"
        assert msg["event"] == "dataset.updated" and msg["offset"] == 1
        assert msg["data"]["dataset"] == "hotline_tickets"
        assert msg["data"]["version"] == run.version
        assert msg["data"]["block_rows"] == in_block
        assert msg["data"]["regions"] == {NANMING: in_block}
        other = _recv(elsewhere, 10)
        assert other is not None and other["data"]["block_rows"] != in_block
        assert _recv(outsider, 1.0) is None  # nothing of the conditional dataset

        hours = 2
        add_readings(world.folder, seed=SEED, hours=hours, after=20 * 24 * 3)
        world.ingest("air_readings")
        got = _recv(outsider, 10)  # the same channel does carry what the caller may read
        assert got is not None and got["data"]["dataset"] == "air_readings"
        assert got["data"]["block_rows"] == 2 * hours  # two stations in 南明区
        mine = _recv(owner, 10)
        assert mine is not None and mine["offset"] == 2, mine
        assert mine["data"]["dataset"] == "air_readings"

        # A live feed event carrying a region code reaches the block it falls in.
        world.hub.bus.publish(
            "feed:hotline_tickets", "feed.event", {"ticket_id": 1, "district_code": NANMING}
        )
        feed = _recv(owner, 10)
        assert feed is not None and feed["event"] == "feed.event" and feed["offset"] == 3
        assert feed["data"]["block_rows"] == 1
        assert _recv(outsider, 1.0) is None

        # Personal fields of a feed event are masked for another agency's reader.
        world.hub.bus.publish(
            "feed:enterprises",
            "feed.event",
            {"district_code": NANMING, "phone": "13812345678", "legal_rep": "张三丰"},
        )
        masked = _recv(outsider, 10)
        assert masked is not None and masked["data"]["phone"] == "138****5678"
        assert masked["data"]["legal_rep"] == "张**"
        shown = _recv(owner, 10)  # the steward is not of the registering agency either
        assert shown is not None and shown["data"]["phone"] == "138****5678"
        seen = [_recv(admin, 10) for _ in range(4)]  # 2 updates, 2 feed events, in order
        assert [m["offset"] for m in seen if m] == [1, 2, 3, 4] and _recv(admin, 0.5) is None
        # An admin sees personal data masked like everyone else (no grant lifts it here).
        assert seen[3] is not None and seen[3]["data"]["phone"] == "138****5678"
    finally:
        for ws in (owner, outsider, elsewhere, admin):
            ws.close()


def test_block_channel_errors(world: World) -> None:
    ws = _block_ws(world, "env_dev", "block:12")
    try:
        err = json.loads(ws.recv(10))
        assert err["type"] == "error" and err["status"] == 400
        ws.send(json.dumps({"op": "subscribe", "channel": "block:520102", "since": 3}))
        err = json.loads(ws.recv(10))
        assert err["type"] == "error" and "live" in err["error"]
    finally:
        ws.close()


def test_regions_dataset_is_shared_with_everyone(world: World) -> None:
    with world.http("env_dev") as http:
        body = http.post(
            "/v1/query",
            json={"sql": "SELECT count(*) AS n FROM regions WHERE parent = '520100'"},
        ).json()
        total = http.post("/v1/query", json={"sql": "SELECT count(*) AS n FROM regions"}).json()
    assert body["rows"][0]["n"] == 10
    assert total["rows"][0]["n"] == len(load_regions())


def test_cli_block_prints_a_table_and_json(world: World) -> None:
    blockhub = str(Path(sys.executable).parent / "blockhub")
    home = str(world.hub.settings.home)
    res = subprocess.run(
        [blockhub, "--home", home, "block", NANMING, "--as", "env_dev"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr
    assert "贵州省贵阳市南明区" in res.stdout and "enterprises" in res.stdout
    assert "hotline" not in res.stdout
    res = subprocess.run(
        [blockhub, "--home", home, "block", GUIYANG, "--json", "--children"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    answer = json.loads(res.stdout)
    assert len(answer["children"]) == 10 and entry(answer, "hotline_tickets")["rows"] > 0
    res = subprocess.run(
        [blockhub, "--home", home, "block", "52"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2 and "6 or 12 digits" in res.stderr and "Traceback" not in res.stderr


def test_principal_is_what_decides(world: World) -> None:
    """The block service asks the exchange as the caller, never as itself."""
    nobody = Principal(id="x", agency_id="gy_hbj", name="x", role="developer")
    answer = Blocks(world.hub.exchange).region(NANMING, nobody)
    assert "hotline_tickets" not in {d["dataset"] for d in answer["datasets"]}
