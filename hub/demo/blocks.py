"""The block part of the demo: the datasets that tie Guiyang's districts together.

Besides the hotline's tickets (by district code), the sample world publishes the region
dimension itself, the environment bureau's stations and hourly readings (by address text,
resolved at ingest), the market regulator's enterprise register (by credit code and
district) and the statistics bureau's district population.  :func:`write_sources` writes
their source files (what the agencies would export); tests and benchmarks reuse it.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console

from catalog.domain.channels import block_channel
from hub.assembly.context import Hub
from hub.demo.sampleworld import air_readings, air_stations, district_population, enterprises
from hub.exchange.blockview import print_block

BLOCK_AGENCIES = {
    "gy_scjgj": "贵阳市市场监督管理局",
    "gy_tjj": "贵阳市统计局",
}
BLOCK_DATASETS = ("regions", "air_stations", "air_readings", "enterprises", "district_population")
READINGS_START = datetime(2024, 6, 1, tzinfo=UTC)


def readings_with_address(n: int, *, seed: int, start: datetime = READINGS_START) -> pa.Table:
    """Hourly readings as the bureau exports them: with each station's address."""
    stations = air_stations(seed)
    readings = air_readings(n, seed=seed, start=start)
    idx = pc.index_in(readings["station_id"], stations["station_id"])
    address = pc.take(stations["address"], idx)
    return readings.add_column(1, "station_address", address)


def write_sources(
    folder: Path,
    *,
    seed: int,
    readings: int = 20 * 24 * 14,
    companies: int = 5_000,
) -> dict[str, int]:
    """Write the block datasets' source files under ``folder``; returns rows per dataset."""
    (folder / "air").mkdir(parents=True, exist_ok=True)
    (folder / "enterprises").mkdir(parents=True, exist_ok=True)
    (folder / "population").mkdir(parents=True, exist_ok=True)
    stations = air_stations(seed)
    pacsv.write_csv(stations, folder / "air" / "stations.csv")
    pq.write_table(
        readings_with_address(readings, seed=seed), folder / "air" / "readings-000001.parquet"
    )
    companies_table = enterprises(companies, seed=seed)
    pacsv.write_csv(companies_table, folder / "enterprises" / "enterprises.csv")
    population = district_population(seed)
    pacsv.write_csv(population, folder / "population" / "population.csv")
    return {
        "air_stations": stations.num_rows,
        "air_readings": readings,
        "enterprises": companies,
        "district_population": population.num_rows,
    }


def add_readings(folder: Path, *, seed: int, hours: int, after: int) -> Path:
    """Append ``hours`` more hours of readings for every station as a new export file."""
    per_hour = air_stations(seed).num_rows
    start = READINGS_START + timedelta(hours=after // per_hour)
    path = folder / "air" / f"readings-{after + 1:06d}.parquet"
    pq.write_table(readings_with_address(per_hour * hours, seed=seed + after, start=start), path)
    return path


def ingest_block_datasets(hub: Hub, console: Console) -> None:
    """Ingest the block datasets once, one line each (addresses left unresolved included)."""
    for dataset_id in BLOCK_DATASETS:
        with warnings.catch_warnings():
            # pyiceberg warns when a replace's delete finds an empty table: the first load.
            warnings.filterwarnings("ignore", message="Delete operation did not match")
            run = hub.ingest(dataset_id, trigger="demo")
        if run.status == "failed":
            raise RuntimeError(f"demo ingest of {dataset_id} failed: {run.error}")
        unresolved = sum(run.details.get("unresolved_addresses", {}).values())
        note = f", {unresolved:,} addresses unresolved" if unresolved else ""
        console.print(
            f"  ingest {run.status}: {dataset_id} {run.rows_written:,} rows → version "
            f"{run.version} in {run.duration_s or 0:.2f} s{note}"
        )


def recv_json(ws: Any, timeout: float) -> dict[str, Any]:
    """The next websocket message that is not a heartbeat: a slow machine's tour lasts
    longer than ``ws_heartbeat_s``, and a heartbeat is not the event the tour waits for."""
    for _ in range(100):
        msg: dict[str, Any] = json.loads(ws.recv(timeout))
        if msg.get("type") != "heartbeat":
            return msg
    raise RuntimeError("only heartbeats arrived")


def block_tour(
    http: httpx.Client, ws_url: str, tokens: dict[str, str], console: Console, ingest: Any
) -> None:
    """The 塊 section of the tour: a district's block for two callers, a city's drill-down,
    and a block channel hearing of new rows in the district."""
    from websockets.sync.client import connect

    console.rule("塊 block data: one answer about one place")
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    dev = {"Authorization": f"Bearer {tokens['dev_hbj']}"}
    r = http.get("/v1/blocks/region/520102", headers=admin)
    r.raise_for_status()
    print_block(console, r.json())
    seen = {
        d["dataset"] for d in http.get("/v1/blocks/region/520102", headers=dev).json()["datasets"]
    }
    console.print(
        f"the environment bureau's developer sees {len(seen)} datasets in the same block "
        f"({', '.join(sorted(seen))}): hotline_tickets is conditional, so it is not there at all"
    )
    r = http.get("/v1/blocks/region/520100", headers=admin, params={"children": "true"})
    r.raise_for_status()
    print_block(console, r.json())
    with connect(ws_url) as ws:
        ws.send(json.dumps({"op": "auth", "token": tokens["steward_12345"]}))
        recv_json(ws, 10)
        ws.send(json.dumps({"op": "subscribe", "channel": block_channel("520102")}))
        reply = recv_json(ws, 10)
        console.print(
            f"← {reply['type']} {reply['channel']} (datasets: {', '.join(reply['datasets'])})"
        )
        console.print("→ new tickets arrive; ingesting them …")
        ingest()
        msg = json.loads(ws.recv(10))
        for _ in range(20):  # a heartbeat or presence frame may come first
            if msg.get("type") == "message":
                break
            msg = json.loads(ws.recv(10))
        data = msg["data"]
        console.print(
            f"← {msg['channel']} #{msg['offset']} {msg['event']}: {data['dataset']} "
            f"version {data['version']}, +{data['block_rows']:,} rows in the block "
            f"(+{data['rows_added']:,} in all)"
        )
