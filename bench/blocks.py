"""Benchmark: a district's block summary across six datasets of ≥ 10,000,000 rows.

Builds (or reuses, with ``--reuse``) a sample world under ``--home``: the demo's six block
datasets with the hotline tickets, hourly readings and enterprise register scaled up, all
ingested through the ordinary flow (readings resolve their station address at ingest).
Then, in the same process and run:

- **blockhub**: ``Blocks.region(code, principal)`` — one SQL per dataset through
  ``Exchange.query`` (access check, SQL check, versions), warm, ``--runs`` times;
- **blockhub over HTTP**: ``GET /v1/blocks/region/{code}`` on a real uvicorn;
- **DuckDB direct**: the very same per-dataset SQL texts, run on a plain DuckDB connection
  over the same Iceberg snapshots (views created once), one after another — the floor.

Prints medians / p95 and the ratio to DuckDB direct.  Not a test: run it by hand, e.g.

    .venv/bin/python bench/blocks.py --home /tmp/blocks-bench
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow.parquet as pq

from catalog.datasets.manifest import load_manifests
from catalog.errors import Conflict
from catalog.identity.store import Principal
from connectors.duck import connect
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.demo.blocks import readings_with_address, write_sources
from hub.demo.sampleworld import enterprises, hotline_tickets
from hub.demo.tour import AGENCIES, MANIFESTS, configure_sources
from hub.exchange.blocks import (
    Blocks,
    block_key,
    block_sql,
    find_region,
    region_prefix,
    region_where,
)
from hub.settings import Settings
from pipelines.feeds import is_feed

SEED = 20240601
CHUNK = 1_000_000


def build(hub: Hub, folder: Path, tickets: int, readings: int, companies: int) -> None:
    """Write the sources as Parquet (CSV would only slow the set-up) and ingest them."""
    for agency_id, name in AGENCIES.items():
        hub.store.identity.upsert_agency(agency_id, name)
    write_sources(folder, seed=SEED, readings=20, companies=10)  # stations, population
    (folder / "hotline").mkdir(parents=True, exist_ok=True)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for first in range(0, tickets, CHUNK):
        n = min(CHUNK, tickets - first)
        end = start + timedelta(days=30)
        t = hotline_tickets(n, seed=SEED + first, start=start, end=end, first_id=first + 1)
        pq.write_table(t, folder / "hotline" / f"tickets-{first:09d}.parquet")
        start = end
    (folder / "air" / "readings-000001.parquet").unlink()
    for first in range(0, readings, CHUNK):
        n = min(CHUNK, readings - first)
        at = datetime(2015, 1, 1, tzinfo=UTC) + timedelta(hours=first // 20)
        pq.write_table(
            readings_with_address(n, seed=SEED, start=at),
            folder / "air" / f"readings-{first:09d}.parquet",
        )
    pq.write_table(enterprises(companies, seed=SEED), folder / "enterprises" / "e.parquet")
    configure_sources(hub, folder, mqtt_prefix="blockhub-bench/blocks")
    for m in load_manifests(MANIFESTS):
        if is_feed(m):  # fed by its source, not pulled
            continue
        if m.id == "hotline_tickets":
            m = _parquet(m, "tickets-*.parquet")
        elif m.id == "enterprises":
            m = _parquet(m, "e.parquet")
        elif m.id == "air_readings":
            m = _parquet(m, "readings-*.parquet")
        hub.register(m, file=f"<{m.id}>")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = hub.ingest(m.id)
        if run.status != "succeeded":
            raise SystemExit(f"ingest of {m.id} failed: {run.error}")
        print(
            f"  ingested {m.id}: {run.rows_written:,} rows in {time.perf_counter() - t0:.1f} s"
            f"{' · ' + json.dumps(run.details, ensure_ascii=False) if run.details else ''}",
            flush=True,
        )


def _parquet(m, pattern: str):  # type: ignore[no-untyped-def]
    """The manifest reading ``pattern`` (Parquet) in the same root instead of its CSV."""
    source = m.source.model_copy(update={"connector": "parquet", "options": {"path": pattern}})
    return m.model_copy(update={"source": source})


CPU: dict[str, list[float]] = {}


def timed(name: str, fn: Callable[[], object]) -> float:
    """Wall ms of one call; the process's CPU ms (all threads) is kept in ``CPU[name]``.
    On a shared machine wall time includes waiting for a core; CPU time does not."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall = (time.perf_counter() - t0) * 1000
    CPU.setdefault(name, []).append((time.process_time() - c0) * 1000)
    return wall


def stats(ms: list[float]) -> str:
    p95 = sorted(ms)[max(0, round(len(ms) * 0.95) - 1)]
    return f"median {statistics.median(ms):7.1f} ms · p95 {p95:7.1f} ms · min {min(ms):7.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path("/tmp/blockhub-bench-blocks"))
    ap.add_argument("--tickets", type=int, default=6_000_000)
    ap.add_argument("--readings", type=int, default=2_000_000)
    ap.add_argument("--companies", type=int, default=2_000_000)
    ap.add_argument("--code", default="520102", help="the district to summarise")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--reuse", action="store_true", help="reuse a world built earlier")
    args = ap.parse_args()

    settings = Settings(home=args.home / "home")
    if not args.reuse:
        shutil.rmtree(args.home, ignore_errors=True)
    hub = Hub.open(settings)
    try:
        if not args.reuse:
            print(f"building the world under {args.home} …", flush=True)
            build(hub, args.home / "world", args.tickets, args.readings, args.companies)
        latest = hub.store.latest_versions()
        total = sum(v.total_rows for v in latest.values())
        print(f"{len(latest)} datasets, {total:,} rows: " + ", ".join(
            f"{d} {v.total_rows:,}" for d, v in sorted(latest.items())
        ))  # fmt: skip
        hub.store.identity.upsert_agency("gy_12345", AGENCIES["gy_12345"])
        principal = Principal("bench", "gy_12345", "bench", "steward")  # owns the tickets
        blocks = Blocks(hub.exchange, timeout_s=60)
        answer = blocks.region(args.code, principal)  # warm: views, caches, first scans
        print(f"datasets in the answer: {len(answer['datasets'])} · versions {answer['versions']}")

        # The floor: the same SQL texts on a plain DuckDB over the same snapshots.
        region = find_region(args.code)
        prefix = region_prefix(region)
        con = connect("iceberg", config={"threads": str(os.cpu_count() or 2)})
        texts = []
        for d in hub.store.list_datasets():
            key = block_key(d.manifest, "region")
            if key is None or d.id not in latest:
                continue
            v = latest[d.id]
            con.execute(
                f'CREATE VIEW "{d.id}" AS SELECT * FROM iceberg_scan('
                f"'{v.metadata_location}', snapshot_from_id={v.snapshot_id})"
            )
            texts.append(block_sql(d, key, region_where(d.manifest, key, prefix)))

        def direct() -> None:
            for sql in texts:
                con.execute(sql).to_arrow_table()

        def through_blockhub() -> None:
            blocks.region(args.code, principal)

        direct()
        rounds: dict[str, list[float]] = {"duckdb": [], "blockhub": [], "http": []}
        port = free_port()
        token = None
        with serving(hub, port):
            with contextlib.suppress(Conflict):  # a world reused from an earlier run
                hub.store.identity.create_principal("bench_http", "gy_12345", "bench", "steward")
            token = hub.store.identity.issue_token("bench_http", ttl=timedelta(hours=1))
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            ) as http:

                def over_http() -> None:
                    http.get(f"/v1/blocks/region/{args.code}").raise_for_status()

                over_http()
                # Interleave the three so that the shared machine's load hits all alike.
                for _ in range(args.runs):
                    rounds["duckdb"].append(timed("duckdb", direct))
                    rounds["blockhub"].append(timed("blockhub", through_blockhub))
                    rounds["http"].append(timed("http", over_http))
        base = statistics.median(rounds["duckdb"])
        load = os.getloadavg()[0]
        print(
            f"district {args.code} summary, {len(texts)} datasets, {args.runs} warm runs each "
            f"(load average {load:.1f} on {os.cpu_count()} cores):"
        )
        for name, label in (
            ("duckdb", "DuckDB direct (same SQL, sequential)"),
            ("blockhub", "blockhub Blocks.region (in-process)"),
            ("http", "blockhub GET /v1/blocks/region (uvicorn)"),
        ):
            ratio = statistics.median(rounds[name]) / base
            cpu = statistics.median(CPU[name])
            cpu_ratio = cpu / statistics.median(CPU["duckdb"])
            print(
                f"  {label:44s} {stats(rounds[name])} · {ratio:.2f}× DuckDB · "
                f"CPU median {cpu:6.1f} ms ({cpu_ratio:.2f}×)"
            )
    finally:
        hub.close()


if __name__ == "__main__":
    main()
