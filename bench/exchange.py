"""Exchange benchmark: blockhub's query API against raw DuckDB, Datasette and ROAPI.

Uses the peer harness in ../shared/bench (read its README): its data (``gen_data.py``),
its five queries and its client (``bench_query.py``), so blockhub is measured in the same
run as the floor (in-process DuckDB over the Parquet files) and the peers.

    python ../shared/bench/gen_data.py --out /tmp/bh-bench/data        # 5M tickets, ~30 s
    .venv/bin/python bench/exchange.py --data /tmp/bh-bench/data --work /tmp/bh-bench

Steps: publish ``hotline_tickets`` and ``districts`` as lake tables of a blockhub home under
``--work`` (ingested through the parquet connector, once), start ``blockhub serve`` on a free
port, run ``bench_query.py`` twice — JSON (with Datasette and ROAPI) and Arrow — with raw
DuckDB measured in each run, and print the hub's medians as ratios to DuckDB's, with the
server's peak RSS.  The reader is a steward of the owning agency (reads unmasked) unless
``--masked``, which reads as another agency (personal columns masked in the engine).
Needs the ``bench`` extra (datasette, roapi) in this venv.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from catalog.datasets.manifest import parse_manifest
from hub.api.server import free_port
from hub.assembly.context import Hub
from hub.settings import Settings

HARNESS = Path(__file__).resolve().parents[2] / "shared" / "bench"

TICKETS = {
    "id": "hotline_tickets",
    "title": "12345热线工单 (bench)",
    "agency": "bench_12345",
    "steward": {"name": "bench"},
    "sharing": {"type": "unconditional"},
    "classification": "general",
    "columns": [
        {"name": "ticket_id", "type": "int64"},
        {"name": "created_at", "type": "timestamp"},
        {"name": "district_code", "type": "string"},
        {"name": "category", "type": "string"},
        {"name": "status", "type": "string"},
        {"name": "caller_phone", "type": "string", "pii": "phone"},
        {"name": "id_card", "type": "string", "pii": "id_number"},
        {"name": "lat", "type": "float64"},
        {"name": "lon", "type": "float64"},
        {"name": "text", "type": "string"},
    ],
    "primary_key": ["ticket_id"],
    "source": {"connector": "parquet", "options": {}, "mode": "replace"},
}
DISTRICTS = {
    "id": "districts",
    "title": "districts (bench)",
    "agency": "bench_12345",
    "steward": {"name": "bench"},
    "sharing": {"type": "unconditional"},
    "classification": "general",
    "columns": [
        {"name": "code", "type": "string"},
        {"name": "name", "type": "string"},
        {"name": "population", "type": "int64"},
    ],
    "primary_key": ["code"],
    "source": {"connector": "parquet", "options": {}, "mode": "replace"},
}


def prepare(data: Path, home: Path, masked: bool) -> str:
    """Publish the two tables (once) and return a token of the reader."""
    hub = Hub.open(Settings(home=home))
    try:
        hub.store.identity.upsert_agency("bench_12345", "bench hotline")
        hub.store.identity.upsert_agency("bench_other", "bench consumer")
        # The data folder is the owning agency's file root, as an admin would set it up.
        if hub.sources.sources.get_root("bench_12345", "data") is None:
            hub.sources.sources.add_root(
                "bench_12345", "data", str(data), protected=hub.sources.protected
            )
        for doc, file in ((TICKETS, "hotline_tickets.parquet"), (DISTRICTS, "districts.parquet")):
            src = {**doc["source"], "root": "data", "options": {"path": file}}  # type: ignore[dict-item]
            hub.register(parse_manifest({**doc, "source": src}), file=f"<{doc['id']}>")
            if not hub.store.versions(str(doc["id"])):
                t0 = time.perf_counter()
                run = hub.ingest(str(doc["id"]))
                print(f"published {doc['id']}: {run.rows_written} rows "
                      f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)  # fmt: skip
        who = "bench_reader_masked" if masked else "bench_reader"
        agency = "bench_other" if masked else "bench_12345"
        role = "developer" if masked else "steward"
        try:
            hub.store.identity.get_principal(who)
        except Exception:
            hub.store.identity.create_principal(who, agency, who, role)
        return hub.store.identity.issue_token(who, ttl=timedelta(hours=6))
    finally:
        hub.close()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_harness(args: argparse.Namespace, url: str | None, token: str, fmt: str, out: Path) -> Any:
    """One bench_query.py invocation: raw DuckDB plus the hub (``url``) or the peers.

    The harness sends every preset target to ``--url`` when one is given, so the peers
    (which it spawns itself) run in an invocation of their own, each with its own DuckDB
    floor; every ratio is taken against the floor of the same invocation."""
    cmd = [
        sys.executable, "-W", "ignore", str(HARNESS / "bench_query.py"),
        "--data", str(args.data), "--runs", str(args.runs), "--runs-heavy", str(args.runs_heavy),
        "--json-out", str(out),
    ]  # fmt: skip
    if url is None:
        cmd += ["--targets", "duckdb," + args.peers]
    else:
        body = '{"sql": {sql_json}, "format": "' + fmt + '"}'
        cmd += [
            "--targets", "duckdb,hub", "--url", url,
            "--template", f"POST /v1/query {body}", "--format", fmt,
            "--header", "Content-Type: application/json",
            "--header", f"Authorization: Bearer {token}",
        ]  # fmt: skip
    if args.only:
        cmd += ["--only", args.only]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def memory_by_result_size(url: str, token: str, pid: int) -> list[tuple[int, str, float, float]]:
    """Stream ever larger answers (the client discards them as they come) and read the
    server's peak RSS after each: if memory is bounded by the batch, not the result, the
    peak stops growing while the answer grows 50x."""
    out = []
    with httpx.Client(base_url=url, timeout=600, headers={"Authorization": f"Bearer {token}"}) as c:
        for rows in (100_000, 1_000_000, 5_000_000):
            for fmt in ("arrow", "json"):
                body = {"sql": f"SELECT * FROM hotline_tickets LIMIT {rows}", "format": fmt}
                size = 0
                with c.stream("POST", "/v1/query", json=body) as r:
                    r.raise_for_status()
                    for chunk in r.iter_raw():
                        size += len(chunk)
                out.append((rows, fmt, size / 2**20, peak_rss_mb(pid)))
    return out


def medians(doc: Any) -> dict[tuple[str, str], float]:
    """(target, query) → median ms, from bench_query.py's JSON output."""
    out: dict[tuple[str, str], float] = {}
    for r in doc["results"]:
        if r.get("median_s") is not None:
            out[r["target"], r["query"]] = r["median_s"] * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="gen_data.py --out folder")
    ap.add_argument("--work", type=Path, required=True, help="folder for blockhub state/results")
    ap.add_argument("--peers", default="datasette,roapi-json,roapi-arrow")
    ap.add_argument("--only", default=None, help="e.g. Q1,Q2")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--runs-heavy", type=int, default=3)
    ap.add_argument("--masked", action="store_true", help="read as another agency (masks on)")
    ap.add_argument(
        "--memory", action="store_true", help="then stream 100k, 1M, 5M-row answers: peak RSS"
    )
    args = ap.parse_args()
    home = args.work / "home"
    token = prepare(args.data, home, args.masked)
    port = free_port()
    # The harness asks one query after another as fast as the hub answers: the per-principal
    # answer limits (docs/api.md "Limits", 2 exports a second by default) would measure the
    # limiter, not the engine, so the benchmark's reader gets limits it cannot reach.
    limits = {f"BLOCKHUB_{k}": "100000" for k in
              ("QUERY_RATE", "QUERY_BURST", "EXPORT_RATE", "EXPORT_BURST")}  # fmt: skip
    env = {**os.environ, **limits, "BLOCKHUB_HOME": str(home)}
    blockhub = Path(sys.executable).parent / "blockhub"
    server = subprocess.Popen(
        [str(blockhub), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("blockhub serve did not start")
            time.sleep(0.2)
        # The steady state is measured: the replica of the 5M-row version is built (D24).
        started = time.monotonic()
        while not httpx.get(f"{url}/healthz").json().get("warm", True):
            if time.monotonic() - started > 600 or server.poll() is not None:
                raise SystemExit("blockhub serve did not warm up in 10 minutes")
            time.sleep(0.2)
        print(f"server warm (replicas built) {time.monotonic() - started:.1f} s after start")
        tag = "masked" if args.masked else "owner"
        docs = {
            fmt: run_harness(args, url, token, fmt, args.work / f"results-{tag}-{fmt}.json")
            for fmt in ("json", "arrow")
        }
        rss = peak_rss_mb(server.pid)
        memory = memory_by_result_size(url, token, server.pid) if args.memory else []
        if args.peers:
            docs["peers"] = run_harness(args, None, token, "json", args.work / "results-peers.json")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"\nblockhub ({tag}) vs raw DuckDB, medians in ms (ratio = hub / duckdb, same run)")
    print("| query | duckdb | hub JSON | ratio | duckdb | hub Arrow | ratio "
          "| duckdb | datasette | roapi JSON | roapi Arrow |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    mj, ma = medians(docs["json"]), medians(docs["arrow"])
    mp = medians(docs["peers"]) if "peers" in docs else {}
    queries = sorted({q for _, q in mj})
    for q in queries:
        d, h = mj.get(("duckdb", q)), mj.get(("hub", q))
        da, ha = ma.get(("duckdb", q)), ma.get(("hub", q))

        def f(x: float | None) -> str:
            return "–" if x is None else f"{x:,.1f}"

        def ratio(a: float | None, b: float | None) -> str:
            return "–" if a is None or b is None else f"{a / b:.2f}×"

        dp = mp.get(("duckdb", q))
        peers = " | ".join(
            f"{f(mp.get((p, q)))} ({ratio(mp.get((p, q)), dp)})"
            for p in ("datasette", "roapi-json", "roapi-arrow")
        )
        print(f"| {q} | {f(d)} | {f(h)} | {ratio(h, d)} | {f(da)} | {f(ha)} | "
              f"{ratio(ha, da)} | {f(dp)} | {peers} |")  # fmt: skip
    print(f"\nblockhub server peak RSS (VmHWM) over both runs: {rss:,.0f} MB")
    if memory:
        print("\nserver peak RSS as the answer grows (same server, after the runs above):")
        print("| rows | format | answer MB | server VmHWM MB |\n|---|---|---|---|")
        for rows, fmt, size, peak in memory:
            print(f"| {rows:,} | {fmt} | {size:,.0f} | {peak:,.0f} |")


if __name__ == "__main__":
    main()
