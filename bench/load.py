"""Load: many clients against one `blockhub serve` — the limits hold and nothing breaks.

    .venv/bin/python bench/load.py --clients 200 --seconds 30        # ~45 s with the seeding

Seeds a blockhub home (a temporary one unless ``--work``) with two datasets of synthetic
12345 hotline tickets (one unconditional, one conditional with a grant that masks and
filters), nine principals of five agencies, then starts ``blockhub serve`` in its own
process and runs ``--clients`` concurrent clients for ``--seconds``: each loops over a
mix of SQL queries (JSON), exports (CSV and Parquet), rows pages, samples, dataset
descriptions and catalog searches, as one of the principals.  A client that is answered
429 waits 0.1 s (less than the ``Retry-After`` it was given: a client in a hurry) and
goes on.

Prints one JSON report: answers by status, errors (any answer other than 2xx and 429,
any transport failure, any traceback in the server's log), latency percentiles of the
successful answers, the server's resident memory (before, peak, after), and whether it
answered ``/healthz`` and a query afterwards.  ``tests/test_load.py`` runs it (marker
``load``) and asserts: no errors, both 2xx and 429 seen, memory under a bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pyarrow.parquet as pq
import yaml

from catalog.datasets.manifest import parse_manifest
from hub.api.server import free_port
from hub.assembly.context import Hub
from hub.demo.sampleworld import hotline_tickets
from hub.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

AGENCIES = {
    "gy_12345": "贵阳市12345政务服务便民热线",
    "gy_dsj": "贵阳市大数据发展管理局",
    "gy_hbj": "贵阳市生态环境局",
    "gy_jyj": "贵阳市教育局",
    "gy_wjw": "贵阳市卫生健康委员会",
}
PEOPLE = [
    ("admin", "gy_dsj", "admin"),
    ("steward", "gy_12345", "steward"),
    ("operator", "gy_dsj", "operator"),
    ("developer", "gy_hbj", "developer"),
    ("dev_jyj_1", "gy_jyj", "developer"),
    ("dev_jyj_2", "gy_jyj", "developer"),
    ("dev_wjw_1", "gy_wjw", "developer"),
    ("dev_wjw_2", "gy_wjw", "developer"),
    ("dev_hbj_2", "gy_hbj", "developer"),
]
"""Who the clients are (spread round-robin): a few principals with many clients each,
as an agency's app servers are."""

SERVER_ENV = {
    "BLOCKHUB_QUERY_MEMORY_LIMIT": "1GB",
    "BLOCKHUB_LOG_LEVEL": "WARNING",
    "BLOCKHUB_FRESHNESS_INTERVAL_S": "0",
}


def seed(home: Path, rows: int = 20_000) -> dict[str, str]:
    """Two ticket datasets, the principals and a token each (valid for 6 hours)."""
    h = Hub.open(Settings(home=home))
    try:
        for agency, name in AGENCIES.items():
            h.store.identity.upsert_agency(agency, name)
        # The owning agency's export folder, beside the home (a root may not overlap it),
        # as an admin gives it (`blockhub source root add`).
        data = home.parent / f"{home.name}-exports"
        data.mkdir(parents=True, exist_ok=True)
        if h.sources.sources.get_root("gy_12345", "exports") is None:
            h.sources.sources.add_root(
                "gy_12345", "exports", str(data), protected=h.sources.protected
            )
        table = hotline_tickets(
            rows, start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 3, 1, tzinfo=UTC)
        )
        pq.write_table(table, data / "tickets.parquet")
        doc = yaml.safe_load((ROOT / "hub/demo/world/hotline_tickets.yaml").read_text("utf-8"))
        for ident, sharing in (
            ("tickets_open", {"type": "unconditional"}),
            ("tickets_cond", {"type": "conditional", "conditions": "state the purpose"}),
        ):
            m = parse_manifest(
                {
                    **doc,
                    "id": ident,
                    "sharing": sharing,
                    "classification": "general",
                    "source": {
                        "connector": "parquet",
                        "root": "exports",
                        "options": {"path": "tickets.parquet"},
                        "cursor": "updated_at",
                    },
                }
            )
            h.register(m, file=f"<{ident}>")
            run = h.ingest(ident)
            if run.status != "succeeded":
                raise RuntimeError(f"seeding {ident} failed: {run.error}")
        tokens = {}
        for pid, agency, role in PEOPLE:
            h.store.identity.create_principal(pid, agency, pid, role)
            tokens[pid] = h.store.identity.issue_token(pid, ttl=timedelta(hours=6))
        record = h.store.get_dataset("tickets_cond")
        g = h.grants.request(
            record,
            agency_id="gy_hbj",
            requested_by="developer",
            purpose="噪音投诉与空气质量关联分析",
            columns=["ticket_id", "district_code", "category", "status", "caller_phone"],
            row_filter={"district_code": ["520102", "520103"]},
        )
        h.grants.approve(g.id, by="steward", dataset=record)
        return tokens
    finally:
        h.close()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_server(home: Path, env: dict[str, str] | None = None) -> Server:
    """``blockhub serve`` over ``home`` in its own process, once it answers /healthz."""
    port = free_port()
    log = home / "serve.log"
    blockhub = Path(sys.executable).parent / "blockhub"
    process = subprocess.Popen(
        [str(blockhub), "serve", "--port", str(port)],
        env={**os.environ, **SERVER_ENV, **(env or {}), "BLOCKHUB_HOME": str(home)},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"blockhub serve did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


GROUP = "SELECT district_code, count(*) AS n FROM tickets_open GROUP BY 1 ORDER BY 1"
PAGE = "SELECT * FROM tickets_open ORDER BY ticket_id LIMIT 200"
MASKED = "SELECT district_code, caller_phone FROM tickets_cond ORDER BY ticket_id LIMIT 100"

MIX: list[tuple[str, int]] = [
    ("query", 30),
    ("query_rows", 10),
    ("export_csv", 8),
    ("export_parquet", 4),
    ("rows", 15),
    ("sample", 8),
    ("describe", 15),
    ("catalog", 5),
    ("masked", 5),
]


def request_for(kind: str, who: str) -> tuple[str, str, dict[str, Any]]:
    if kind == "query":
        return "POST", "/v1/query", {"json": {"sql": GROUP}}
    if kind == "query_rows":
        return "GET", "/v1/query", {"params": {"sql": PAGE}}
    if kind == "export_csv":
        return "POST", "/v1/query", {"json": {"sql": "SELECT * FROM tickets_open", "format": "csv"}}
    if kind == "export_parquet":
        params = {"limit": 2000, "format": "parquet"}
        return "GET", "/v1/datasets/tickets_open/rows", {"params": params}
    if kind == "rows":
        params = {"limit": 100, "filter": "district_code:eq:520102", "sort": "-ticket_id"}
        return "GET", "/v1/datasets/tickets_open/rows", {"params": params}
    if kind == "sample":
        return "GET", "/v1/datasets/tickets_open/sample", {"params": {"n": 10}}
    if kind == "describe":
        return "GET", "/v1/datasets/tickets_open", {}
    if kind == "catalog":
        return "GET", "/v1/catalog", {"params": {"q": "热线"}}
    # masked: only principals with the grant (or the owner) read tickets_cond
    if who in ("developer", "steward", "admin"):
        return "POST", "/v1/query", {"json": {"sql": MASKED}}
    return "POST", "/v1/query", {"json": {"sql": GROUP}}


@dataclass
class Report:
    clients: int
    seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    by_kind: dict[str, Counter[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    missing_retry_after: int = 0
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    healthy_after: bool = False
    server_tracebacks: int = 0

    def error(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < 20:
            self.errors.append(text)

    def to_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

        ok = sum(n for s, n in self.statuses.items() if 200 <= s < 300)
        return {
            "clients": self.clients,
            "seconds": self.seconds,
            "answers": sum(self.statuses.values()),
            "ok_per_s": round(ok / self.seconds, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "by_kind": {
                k: {str(s): n for s, n in sorted(v.items())}
                for k, v in sorted(self.by_kind.items())
            },
            "errors": self.error_count,
            "error_samples": self.errors,
            "missing_retry_after": self.missing_retry_after,
            "latency_ms_2xx": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99)},
            "rss_mb": {
                "before": round(self.rss_before_mb),
                "peak": round(self.rss_peak_mb),
                "after": round(self.rss_after_mb),
            },
            "healthy_after": self.healthy_after,
            "server_tracebacks": self.server_tracebacks,
        }


async def _client(
    n: int,
    url: str,
    tokens: dict[str, str],
    deadline: float,
    report: Report,
    limits: httpx.Limits,
) -> None:
    rnd = random.Random(n)
    who = PEOPLE[n % len(PEOPLE)][0]
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    headers = {"Authorization": f"Bearer {tokens[who]}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as c:
        while time.monotonic() < deadline:
            kind = rnd.choices(kinds, weights)[0]
            method, path, kw = request_for(kind, who)
            started = time.perf_counter()
            try:
                r = await c.request(method, path, **kw)
            except httpx.HTTPError as e:
                report.error(f"{kind} as {who}: {type(e).__name__}: {e}")
                continue
            report.statuses[r.status_code] += 1
            report.by_kind.setdefault(kind, Counter())[r.status_code] += 1
            if 200 <= r.status_code < 300:
                report.latencies_ms.append((time.perf_counter() - started) * 1000)
            elif r.status_code == 429:
                if not r.headers.get("retry-after", "").isdigit():
                    report.missing_retry_after += 1
                await asyncio.sleep(0.1)
            else:
                report.error(f"{kind} as {who}: {r.status_code} {r.text[:200]}")


def run_load(server: Server, tokens: dict[str, str], clients: int, seconds: float) -> Report:
    """``clients`` concurrent clients for ``seconds`` against ``server``; the server's
    memory is sampled every 0.2 s meanwhile."""
    report = Report(clients=clients, seconds=seconds)
    report.rss_before_mb = server.rss() / 2**20
    peak = [report.rss_before_mb]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            try:
                peak[0] = max(peak[0], server.rss() / 2**20)
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def main() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(_client(n, server.url, tokens, deadline, report, limits) for n in range(clients))
        )

    try:
        asyncio.run(main())
    finally:
        stop.set()
        sampler.join(5)
    report.rss_peak_mb = peak[0]
    time.sleep(1.0)  # answers in flight at the deadline finish
    report.rss_after_mb = server.rss() / 2**20
    try:
        health = httpx.get(f"{server.url}/healthz", timeout=10)
        query = httpx.post(
            f"{server.url}/v1/query",
            json={"sql": GROUP},
            headers={"Authorization": f"Bearer {tokens['admin']}"},
            timeout=30,
        )
        report.healthy_after = health.status_code == 200 and query.status_code == 200
    except httpx.HTTPError:
        report.healthy_after = False
    report.server_tracebacks = server.log.read_text(errors="replace").count("Traceback")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rows", type=int, default=20_000, help="tickets per dataset")
    ap.add_argument("--work", type=Path, help="blockhub home to make (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.work or Path(tmp) / "home"
        tokens = seed(home, args.rows)
        server = start_server(home)
        try:
            report = run_load(server, tokens, args.clients, args.seconds)
        finally:
            server.stop()
    print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
