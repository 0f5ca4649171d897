"""``blockhub demo``: the sample world of Guiyang, end to end on embedded defaults.

It writes the 12345 hotline's ticket exports as CSV files (a source that needs
no server), registers the dataset, ingests it, adds an increment and ingests
again (a second version), then either serves the API and websocket on
127.0.0.1 and prints what to try, or (``--tour``) walks through them itself
and exits.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
from rich.console import Console
from rich.table import Table

from catalog.datasets.store import Run
from catalog.domain.channels import dataset_channel, feed_channel
from catalog.errors import NotFound
from hub.api.server import free_port, serve, serving
from hub.assembly.context import Hub
from hub.demo.blocks import (
    BLOCK_AGENCIES,
    block_tour,
    ingest_block_datasets,
    recv_json,
    write_sources,
)
from hub.demo.sampleworld import air_readings, hotline_tickets
from hub.settings import Settings

MANIFESTS = Path(__file__).parent / "world"
SEED = 20240601
START = datetime(2024, 5, 1, tzinfo=UTC)

AGENCIES = {
    "gy_dsj": "贵阳市大数据发展管理局",
    "gy_12345": "贵阳市12345政务服务便民热线",
    "gy_hbj": "贵阳市生态环境局",
    **BLOCK_AGENCIES,
}
PRINCIPALS = [
    ("admin", "gy_dsj", "admin", "指挥中心管理员"),
    ("steward_12345", "gy_12345", "steward", "王敏"),
    ("operator", "gy_dsj", "operator", "值班调度员"),
    ("dev_hbj", "gy_hbj", "developer", "环保局开发者"),
]


#: Each sample agency's export folder under the world folder: its file root ``exports``.
EXPORT_FOLDERS = {
    "gy_12345": "hotline",
    "gy_hbj": "air",
    "gy_scjgj": "enterprises",
    "gy_tjj": "population",
}


def configure_sources(hub: Hub, folder: Path, *, mqtt_prefix: str) -> None:
    """What an admin does for the sample world (`blockhub source root add`, `... profile
    add`): each agency's export folder under ``folder`` becomes its file root ``exports``,
    and the environment bureau's stations publish to the machine's broker under
    ``mqtt_prefix`` (profile ``stations_broker``).  ``folder`` must lie outside the hub's
    home: the hub never reads its own state as a source."""
    guard = hub.sources
    for agency, sub in EXPORT_FOLDERS.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        guard.sources.add_root(agency, "exports", str(folder / sub), protected=guard.protected)
    guard.sources.add_profile(
        "gy_hbj",
        "stations_broker",
        "mqtt",
        protected=guard.protected,
        settings={"host": "127.0.0.1", "port": 1883, "topic_prefix": mqtt_prefix},
    )


@dataclass
class World:
    hub: Hub
    folder: Path
    tokens: dict[str, str]
    mqtt_prefix: str = ""
    next_id: int = 1
    clock: datetime = START

    def write_tickets(self, n: int, *, bad: int = 0) -> Path:
        """Write the next ``n`` tickets as one more export file of the hotline; ``bad`` of
        them get a mistyped phone number, ID number or district code (for the gate)."""
        end = self.clock + timedelta(days=max(1, n // 2000))
        table = hotline_tickets(
            n, seed=SEED + self.next_id, start=self.clock, end=end, first_id=self.next_id
        )
        if bad:
            table = _corrupt(table, bad)
        folder = self.folder / "hotline"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"tickets-{self.next_id:09d}.csv"
        pacsv.write_csv(table, path)
        self.next_id += n
        self.clock = end
        return path


def _corrupt(table: pa.Table, bad: int) -> pa.Table:
    """Typing mistakes an agency system lets through: one per row, cycling over three."""
    mistakes = [
        ("caller_phone", lambda v: "2" + v[1:]),  # no mobile number starts with 2
        ("caller_id_number", lambda v: v[:-1] + ("0" if v[-1] != "0" else "1")),
        ("district_code", lambda v: "520199"),  # not a division of Guiyang
    ]
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    for i in range(bad):
        row = (i * 97 + 13) % table.num_rows
        column, typo = mistakes[i % len(mistakes)]
        columns[column][row] = typo(columns[column][row])
    return pa.table(columns, schema=table.schema)


def _quality_line(console: Console, hub: Hub, run: Run) -> None:
    try:
        q = hub.store.quality.get_result(run.id)
    except NotFound:
        return
    failed = ", ".join(q.summary()["failed_expectations"])
    text = (
        f"  quality {q.status}: {q.evaluated - q.failed}/{q.evaluated} expectations met on "
        f"{q.rows_checked:,} rows"
    )
    if q.rows_quarantined:
        text += f", {q.rows_quarantined:,} quarantined ({failed})"
    console.print(text)


def build_world(settings: Settings, rows: int, console: Console) -> World:
    """Fresh state under ``<home>/demo``: the hub's own in ``demo/hub``, the agencies'
    export folders in ``demo/world``; agencies, their roots and profiles, principals,
    tokens, datasets, two versions."""
    demo = settings.home / "demo"
    if demo.exists():
        shutil.rmtree(demo)
    home = demo / "hub"
    home.mkdir(parents=True)
    s = settings.model_copy(update={"home": home, "manifests": MANIFESTS})
    # The air-quality feed's topics start with this, so that demos on one broker stay apart.
    mqtt_prefix = f"blockhub-demo/{uuid.uuid4().hex[:8]}/guiyang"
    hub = Hub.open(s)
    for agency_id, name in AGENCIES.items():
        hub.store.identity.upsert_agency(agency_id, name)
    configure_sources(hub, demo / "world", mqtt_prefix=mqtt_prefix)
    tokens = {}
    for pid, agency, role, name in PRINCIPALS:
        hub.store.identity.create_principal(pid, agency, name, role)
        tokens[pid] = hub.store.identity.issue_token(pid, label="demo", ttl=timedelta(days=7))
    world = World(hub=hub, folder=demo / "world", tokens=tokens, mqtt_prefix=mqtt_prefix)
    console.print(f"[bold]blockhub demo[/] — state in {home}")
    for m in hub.register_manifests():
        console.print(
            f"registered dataset [bold]{m.id}[/] ({m.title}, {m.sharing.type}, {m.classification})"
        )
    world.write_tickets(rows)
    run = hub.ingest("hotline_tickets", trigger="demo")
    _report(console, run)
    _quality_line(console, hub, run)
    world.write_tickets(max(1, rows // 20))
    run = hub.ingest("hotline_tickets", trigger="demo")
    _report(console, run)
    _quality_line(console, hub, run)
    write_sources(world.folder, seed=SEED)
    ingest_block_datasets(hub, console)
    return world


def _report(console: Console, run: Run) -> None:
    if run.status == "failed":
        raise RuntimeError(f"demo ingest failed: {run.error}")
    console.print(
        f"  ingest {run.status}: {run.rows_written:,} new rows → version {run.version} "
        f"in {run.duration_s or 0:.2f} s"
    )


def guided_tour(world: World, console: Console) -> None:
    """Walk through the API and the websocket against a live server, then stop."""
    from websockets.sync.client import connect

    port = free_port()
    admin = {"Authorization": f"Bearer {world.tokens['admin']}"}
    with (
        serving(world.hub, port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        console.rule("通 query over HTTP")
        r = http.post(
            "/v1/query",
            headers=admin,
            json={
                "sql": "SELECT district_code, count(*) AS tickets FROM hotline_tickets "
                "GROUP BY 1 ORDER BY 2 DESC"
            },
        )
        r.raise_for_status()
        body = r.json()
        t = Table("district_code", "tickets")
        for row in body["rows"]:
            t.add_row(row["district_code"], f"{row['tickets']:,}")
        console.print(t)
        console.print(f"versions used: {body['versions']} · {body['query_ms']} ms")

        count_sql = {"sql": "SELECT count(*) AS n FROM hotline_tickets"}
        v1 = http.post(
            "/v1/query", headers=admin, json={**count_sql, "versions": {"hotline_tickets": 1}}
        ).json()
        latest = http.post("/v1/query", headers=admin, json=count_sql).json()
        console.print(
            f"time travel: version 1 has {v1['rows'][0]['n']:,} rows, "
            f"version {latest['versions']['hotline_tickets']} has {latest['rows'][0]['n']:,}"
        )

        denied = http.post(
            "/v1/query",
            headers={"Authorization": f"Bearer {world.tokens['dev_hbj']}"},
            json=count_sql,
        )
        console.print(
            f"sharing rules: the environment bureau's developer gets {denied.status_code} "
            f"({denied.json()['error']}) — the dataset is conditional"
        )

        console.rule("用 websocket: dataset updates")
        with connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
            ws.send(json.dumps({"op": "auth", "token": world.tokens["steward_12345"]}))
            console.print(f"← {recv_json(ws, 10)['type']}")
            ws.send(
                json.dumps(
                    {"op": "subscribe", "channel": dataset_channel("hotline_tickets"), "since": 0}
                )
            )
            seen = 0
            while seen < 3:  # subscribed + the two versions already published (replay)
                msg = recv_json(ws, 10)
                seen += 1
                _print_ws(console, msg)
            world.write_tickets(500)
            console.print("→ a new export file arrives; ingesting it …")
            run = world.hub.ingest("hotline_tickets", trigger="demo")
            _report(console, run)
            _quality_line(console, world.hub, run)
            _print_ws(console, recv_json(ws, 10))

            console.rule("通 quality gate")
            world.write_tickets(500, bad=3)
            console.print("→ an export with three mistyped rows arrives; ingesting it …")
            run = world.hub.ingest("hotline_tickets", trigger="demo")
            _report(console, run)
            _quality_line(console, world.hub, run)
            _print_ws(console, recv_json(ws, 10))  # quality.failed
            _print_ws(console, recv_json(ws, 10))  # dataset.updated
        steward = {"Authorization": f"Bearer {world.tokens['steward_12345']}"}
        held = http.get("/v1/datasets/hotline_tickets/quarantine", headers=steward).json()
        [batch] = held["batches"]
        rows = http.get(
            f"/v1/datasets/hotline_tickets/quarantine/{batch['id']}/rows", headers=steward
        ).json()["rows"]
        for row in rows:
            console.print(
                f"  quarantined ticket {row['ticket_id']}: {', '.join(row['_bh_failed'])}"
            )
        console.print(
            f"  the steward sees them in `{cli_command(world.hub.settings.home)} quarantine "
            "list hotline_tickets`, the report at /v1/datasets/hotline_tickets/quality/report",
            soft_wrap=True,  # a command broken across lines would not run as printed
        )
        live_feed_tour(world, console, port)

        def more_tickets() -> None:
            world.write_tickets(500)
            _report(console, world.hub.ingest("hotline_tickets", trigger="demo"))

        block_tour(http, f"ws://127.0.0.1:{port}/v1/ws", world.tokens, console, more_tickets)
    console.rule("done")
    console.print(
        f"Run `{cli_program()} demo` without --tour to keep the server running and try it "
        "yourself.",
        soft_wrap=True,
    )


def live_feed_tour(world: World, console: Console, port: int) -> None:
    """Stations publish readings over MQTT; they arrive on the websocket at once and in the
    lake with the next flush (skipped, saying so, when no broker listens on 127.0.0.1:1883)."""
    import paho.mqtt.client as mqtt
    from websockets.sync.client import connect

    console.rule("用 live feed: air quality over MQTT")
    prefix = world.mqtt_prefix
    station = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-station")
    try:
        station.connect("127.0.0.1", 1883)
    except OSError as e:
        console.print(f"no MQTT broker on 127.0.0.1:1883 ({e.strerror or e}): feed part skipped")
        return
    station.loop_start()
    readings = air_readings(20, seed=SEED, start=START).to_pylist()
    with connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
        ws.send(json.dumps({"op": "auth", "token": world.tokens["dev_hbj"]}))
        recv_json(ws, 10)
        for channel in (feed_channel("air_quality_live"), dataset_channel("air_quality_live")):
            ws.send(json.dumps({"op": "subscribe", "channel": channel}))
            recv_json(ws, 10)
        console.print(f"→ 20 stations publish their hourly reading on {prefix}/air/<station>")
        for r in readings:
            payload = {**r, "measured_at": r["measured_at"].isoformat()}
            station.publish(f"{prefix}/air/{r['station_id']}", json.dumps(payload), qos=1)
        events = 0
        while True:
            msg = recv_json(ws, 30)
            if msg.get("event") == "feed.event":
                events += 1
                if events <= 2:
                    d = msg["data"]
                    console.print(
                        f"← {msg['channel']} #{msg['offset']} feed.event: {d['station_id']} "
                        f"AQI {d['aqi']} at {d['measured_at']}"
                    )
            elif msg.get("event") == "dataset.updated":
                console.print(f"  … {events} readings arrived live, then the flush:")
                _print_ws(console, msg)
                break
    station.disconnect()
    station.loop_stop()


def _print_ws(console: Console, msg: dict[str, object]) -> None:
    data = msg.get("data")
    if msg.get("event") == "quality.failed" and isinstance(data, dict):
        console.print(
            f"← {msg['channel']} #{msg['offset']} quality.failed: {data['rows_quarantined']:,} "
            f"of {data['rows_checked']:,} rows quarantined ({data['policy']})"
        )
    elif msg.get("type") == "message":
        assert isinstance(data, dict)
        console.print(
            f"← {msg['channel']} #{msg['offset']} {msg['event']}: version {data['version']}, "
            f"+{data['rows_added']:,} rows (total {data['total_rows']:,})"
        )
    else:
        console.print(f"← {msg.get('type')} {msg.get('channel', '')}")


def cli_command(home: Path) -> str:
    """How to run ``blockhub`` on the demo's state from the shell the demo was started in:
    the demo's state is not in the default home, and ``make demo`` runs
    ``.venv/bin/blockhub``, which is not on the PATH unless the environment is active."""
    return f"BLOCKHUB_HOME={shlex.quote(str(home))} {cli_program()}"


def cli_program() -> str:
    """``blockhub`` when that is the program running, else the path it was started by."""
    prog = sys.argv[0] if sys.argv and sys.argv[0] else "blockhub"
    found = shutil.which("blockhub")
    if found and os.path.realpath(found) == os.path.realpath(prog):
        return "blockhub"
    return shlex.quote(prog)


def run_demo(settings: Settings, *, tour: bool, rows: int, port: int, console: Console) -> None:
    world = build_world(settings, rows, console)
    try:
        if tour:
            guided_tour(world, console)
            return
        token = world.tokens["admin"]
        base = f"http://127.0.0.1:{port}"
        console.rule("try it")
        console.print(
            f"""\
Tokens (valid 7 days): {json.dumps(world.tokens, indent=2)}

  export TOKEN={token}
  curl -s -H "Authorization: Bearer $TOKEN" {base}/v1/datasets
  curl -s -H "Authorization: Bearer $TOKEN" -G {base}/v1/query \\
       --data-urlencode "sql=SELECT category, count(*) n FROM hotline_tickets GROUP BY 1"
  curl -s -H "Authorization: Bearer $TOKEN" -G {base}/v1/query \\
       --data-urlencode "version=hotline_tickets=1" \\
       --data-urlencode "sql=SELECT count(*) FROM hotline_tickets"
  Dashboard: {base}/dashboard/ (sign in with a token above)
  curl -s -H "Authorization: Bearer $TOKEN" {base}/v1/blocks/region/520102
  OpenAPI: {base}/docs · websocket: ws://127.0.0.1:{port}/v1/ws (docs/websocket.md)

Publish an air-quality reading (a live feed; docs/feeds.md):
  mosquitto_pub -t {world.mqtt_prefix}/air/GYAQ01 -q 1 -m \\
    '{{"station_id": "GYAQ01", "measured_at": "2024-06-01T08:00:00+08:00", "aqi": 57}}'

Drop another tickets-*.csv export into {world.folder / "hotline"} and run
  {cli_command(world.hub.settings.home)} ingest hotline_tickets
to publish version 3; websocket subscribers of dataset:hotline_tickets hear of it.
""",
            soft_wrap=True,  # commands wider than the terminal must stay one line each
            highlight=False,
        )
        serve(world.hub, "127.0.0.1", port)
    finally:
        world.hub.close()
