"""Prometheus metrics of a hub process (``GET /metrics``, docs/operations.md "Observability").

Two kinds:

- **Measured in this process** (module-level, one registry per process): HTTP requests by
  route template and status, query and export time, rows that left in answers, how far
  behind the log this process's bus reads.  Counters start at zero with the process;
  Prometheus' ``rate()`` is built for that.
- **Read at scrape time** (:class:`HubCollector`, one per app): websocket connections and
  subscriptions of this process, and what the catalog says for the whole installation —
  ingest runs and rows by dataset and outcome, quality failures, the outbox's depth.
  Runs are counted from the catalog, not by the process that ran them, so a run of the
  feed-flush worker process, of an Airflow worker or of the CLI is counted all the same:
  no multi-process metric files are needed.  Every replica exports the same catalog
  totals; aggregate them with ``max``, not ``sum`` (docs/grafana/blockhub.json does).

Label values are bounded: routes are templates (``/v1/datasets/{dataset_id}``), never
paths; datasets are the registered ones; nothing a caller types becomes a label.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Table, and_, func, select
from sqlalchemy.engine import Engine

from catalog.datasets.quality import results_table
from catalog.datasets.store import RunRow
from catalog.outbox import outbox_table
from eventlog.message import Message


class _Outage(Protocol):
    failures: int


class _Bus(Protocol):
    """What the gauges read of a process's bus (``hub.live.bus.Bus``)."""

    @property
    def ready(self) -> bool: ...
    @property
    def buffered(self) -> int: ...
    @property
    def outage(self) -> _Outage: ...
    def subscribers_by_kind(self) -> dict[str, int]: ...


class _Store(Protocol):
    @property
    def engine(self) -> Engine: ...


class HubLike(Protocol):
    """What the collector reads of a hub (``hub.assembly.context.Hub``); a protocol, so
    that this leaf imports no wing (tests/test_layering_wings.py)."""

    @property
    def store(self) -> _Store: ...
    @property
    def bus(self) -> _Bus: ...


class Connections(Protocol):
    """The websocket connections of this process (``hub.live.presence.Presence``)."""

    def connections(self) -> int: ...


log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry(auto_describe=True)
"""This process's own measurements (not prometheus_client's global registry: Airflow and
other libraries loaded in the same process register theirs there)."""

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HTTP_REQUESTS = Counter(
    "blockhub_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "blockhub_http_request_duration_seconds",
    "time to the end of the answer (a streamed answer: its last byte), by route template",
    ["method", "route"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
QUERY_SECONDS = Histogram(
    "blockhub_query_duration_seconds",
    "time of an exchange answer from the start of the query to its last row, by audit action"
    " (query, export, rows, sample, block…) and outcome (ok, denied, timeout, failed)",
    ["action", "outcome"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
ROWS_EXPORTED = Counter(
    "blockhub_rows_exported",
    "rows that left the hub in exchange answers, by audit action and format",
    ["action", "format"],
    registry=REGISTRY,
)
BUS_LAG = Histogram(
    "blockhub_bus_lag_seconds",
    "age of the newest message of a read when this process's bus read it from the event log"
    " (append to fan-out start)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0),
    registry=REGISTRY,
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_SECONDS.labels(method, route).observe(seconds)


def observe_answer(action: str, outcome: str, fmt: str, seconds: float, rows: int) -> None:
    """One exchange answer, closed (called where its audit entry is written)."""
    QUERY_SECONDS.labels(action, outcome).observe(seconds)
    if rows:
        ROWS_EXPORTED.labels(action, fmt).inc(rows)


def bus_read(msgs: Sequence[Message]) -> None:
    """The bus read ``msgs`` from the log: how old the newest one was by then."""
    if msgs:
        BUS_LAG.observe(max(0.0, time.time() - msgs[-1].ts.timestamp()))


# -- read at scrape time ---------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogCounts:
    """What the catalog says, read at most every ``ttl_s`` (the same for every replica)."""

    runs: list[tuple[str, str, int, int]]  # dataset, outcome, runs, rows written
    quality: list[tuple[str, str, int, int]]  # dataset, policy, failed validations, rows held
    outbox_pending: int
    outbox_given_up: int


def read_catalog(engine: Engine) -> CatalogCounts:
    """Four grouped reads of the catalog (runs, quality results, outbox)."""
    runs_t: Table = RunRow.__table__  # type: ignore[assignment]
    q: Table = results_table
    with engine.connect() as conn:
        runs = conn.execute(
            select(
                runs_t.c.dataset_id,
                runs_t.c.status,
                func.count(),
                func.coalesce(func.sum(runs_t.c.rows_written), 0),
            ).group_by(runs_t.c.dataset_id, runs_t.c.status)
        ).all()
        quality = conn.execute(
            select(
                q.c.dataset_id,
                q.c.policy,
                func.count(),
                func.coalesce(func.sum(q.c.rows_quarantined), 0),
            )
            .where(q.c.success.is_(False))
            .group_by(q.c.dataset_id, q.c.policy)
        ).all()
        pending = conn.execute(
            select(func.count()).where(
                and_(outbox_table.c.published_at.is_(None), outbox_table.c.given_up_at.is_(None))
            )
        ).scalar_one()
        given_up = conn.execute(
            select(func.count()).where(outbox_table.c.given_up_at.is_not(None))
        ).scalar_one()
    return CatalogCounts(
        runs=[(r[0], r[1], int(r[2]), int(r[3])) for r in runs],
        quality=[(r[0], r[1], int(r[2]), int(r[3])) for r in quality],
        outbox_pending=int(pending),
        outbox_given_up=int(given_up),
    )


class HubCollector(Collector):
    """The gauges and catalog totals of one hub, made when Prometheus scrapes."""

    def __init__(
        self,
        hub: HubLike,
        presence: Callable[[], Connections | None],
        *,
        ttl_s: float,
        read: Callable[[Engine], CatalogCounts] = read_catalog,
    ) -> None:
        self.hub = hub
        self.presence = presence
        self.ttl_s = ttl_s
        self._read = read
        self._lock = threading.Lock()
        self._cached: tuple[float, CatalogCounts] | None = None

    def _catalog(self) -> CatalogCounts | None:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.ttl_s:
                return self._cached[1]
            try:
                counts = self._read(self.hub.store.engine)
            except Exception as e:  # a scrape must not fail with the catalog down
                log.warning("metrics: catalog unavailable: %s", type(e).__name__)
                self._cached = None
                return None
            self._cached = (now, counts)
            return counts

    def collect(self) -> Iterable[Metric]:
        presence = self.presence()
        conns = GaugeMetricFamily(
            "blockhub_ws_connections", "websocket connections open on this process"
        )
        conns.add_metric([], presence.connections() if presence is not None else 0)
        yield conns
        subs = GaugeMetricFamily(
            "blockhub_ws_subscribers",
            "subscriptions of this process's websocket connections, by channel kind",
            labels=["kind"],
        )
        for kind, n in sorted(self.hub.bus.subscribers_by_kind().items()):
            subs.add_metric([kind], n)
        yield subs
        bus = self.hub.bus
        buffered = GaugeMetricFamily(
            "blockhub_bus_buffered_messages",
            "messages read from the event log and not yet offered to every subscriber",
        )
        buffered.add_metric([], bus.buffered)
        yield buffered
        up = GaugeMetricFamily(
            "blockhub_event_log_up", "1 while this process's bus reads the event log"
        )
        up.add_metric([], 1 if bus.ready and not bus.outage.failures else 0)
        yield up
        yield from self._catalog_metrics()

    def _catalog_metrics(self) -> Iterable[Metric]:
        counts = self._catalog()
        ok = GaugeMetricFamily(
            "blockhub_catalog_metrics_up",
            "1 when the catalog totals below could be read at this scrape",
        )
        ok.add_metric([], 0 if counts is None else 1)
        yield ok
        if counts is None:
            return
        runs = CounterMetricFamily(
            "blockhub_ingest_runs",
            "ingest runs recorded in the catalog, by dataset and outcome (run status)",
            labels=["dataset", "outcome"],
        )
        rows = CounterMetricFamily(
            "blockhub_ingest_rows",
            "rows written by ingest runs, by dataset and outcome",
            labels=["dataset", "outcome"],
        )
        for dataset, outcome, n, written in counts.runs:
            runs.add_metric([dataset, outcome], n)
            rows.add_metric([dataset, outcome], written)
        yield runs
        yield rows
        failures = CounterMetricFamily(
            "blockhub_quality_failures",
            "validations the quality gate failed, by dataset and policy",
            labels=["dataset", "policy"],
        )
        held = CounterMetricFamily(
            "blockhub_quality_rows_quarantined",
            "rows the quality gate kept out of the lake, by dataset and policy",
            labels=["dataset", "policy"],
        )
        for dataset, policy, n, quarantined in counts.quality:
            failures.add_metric([dataset, policy], n)
            held.add_metric([dataset, policy], quarantined)
        yield failures
        yield held
        depth = GaugeMetricFamily(
            "blockhub_outbox_depth", "events staged in the catalog's outbox, not yet published"
        )
        depth.add_metric([], counts.outbox_pending)
        yield depth
        given_up = GaugeMetricFamily(
            "blockhub_outbox_given_up", "outbox events the log refused too often, set aside"
        )
        given_up.add_metric([], counts.outbox_given_up)
        yield given_up


def exposition(collector: Collector | None = None) -> bytes:
    """The text exposition: this process's registry, then the hub's collector."""
    body = generate_latest(REGISTRY)
    if collector is not None:
        own = CollectorRegistry(auto_describe=False)
        own.register(collector)
        body += generate_latest(own)
    return body
