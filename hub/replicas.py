"""Serving replicas: DuckDB-native copies of the latest large versions (docs/decisions.md D24).

The lake (Iceberg tables of Parquet files) stays the source of truth; a replica is a
cache of one immutable version in DuckDB's own storage, in a database file attached to
the exchange's DuckDB.  DuckDB answers from its own format without decompressing Parquet
pages and with a zone map per 2,048 values instead of one per Parquet row group: a point
lookup over 5M rows takes ~1.5 ms instead of ~10 ms through ``iceberg_scan``, scans and
exports are faster too (measured in D24).

Replicas are built one at a time by a background thread, only for the latest version of
a dataset above the exchange's small-copy size, within a row budget; until one is ready
(and for every earlier version, time travel included) queries read the lake.  A version
never changes, so a replica is exact; when a newer version becomes the latest, the old
replica is dropped and its view goes back to the lake.  The file belongs to one process
(``exchange-<pid>-<random>.duckdb`` under the cache folder) and is deleted on close; files left by
processes that no longer run are removed at start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from catalog.sqltext import quote_ident, quote_literal
from catalog.store import Version

log = logging.getLogger(__name__)

SCHEMA = "bh_replica"  # the attached database's name; user SQL can never name it (sqlcheck)


@dataclass(frozen=True)
class Replica:
    version: Version
    table: str  # qualified name in the exchange's DuckDB
    rows: int
    build_s: float


def replica_file(folder: Path) -> Path:
    """A new file for this exchange: a process may hold several (one per hub it opens)."""
    return folder / f"exchange-{os.getpid()}-{uuid.uuid4().hex[:8]}.duckdb"


def remove_stale(folder: Path) -> None:
    """Delete replica files of processes that no longer run."""
    for path in folder.glob("exchange-*.duckdb*"):
        pid_text = path.name.removeprefix("exchange-").split("-", 1)[0].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except PermissionError:
            pass  # someone else's process: running


class Replicas:
    """Builds and drops replicas in one background thread.

    ``point_at(view, select_sql)`` is the exchange's way of re-pointing a version's view
    (under its own lock); it is called with the replica's table when one is ready, and
    with the lake scan again before a replica is dropped.
    """

    def __init__(
        self,
        db: duckdb.DuckDBPyConnection,
        folder: Path,
        *,
        max_rows: int,
        point_at: Callable[[Version, str], None],
        scan_sql: Callable[[Version], str],
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale(folder)
        self.path = replica_file(folder)
        # Attached before the exchange turns external access off; DuckDB then keeps
        # writing this file (it is a database it already holds, not a path user SQL names).
        db.execute(f"ATTACH {quote_literal(str(self.path))} AS {SCHEMA}")
        self._db = db
        self.max_rows = max_rows
        self._point_at = point_at
        self._scan_sql = scan_sql
        self._lock = threading.Lock()
        self._ready: dict[str, Replica] = {}  # dataset id → replica of its latest version
        self._wanted: dict[str, Version] = {}  # dataset id → latest version to replicate
        self._queued: set[tuple[str, int]] = set()
        self._failed: set[tuple[str, int]] = set()
        self._jobs: queue.SimpleQueue[tuple[str, int] | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._building: duckdb.DuckDBPyConnection | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="bh-replicas", daemon=True)
        self._thread.start()

    # -- what the exchange calls -----------------------------------------------------

    def sync(self, latest: Iterable[Version], min_rows: int) -> None:
        """The latest versions changed: replicate the large ones, drop superseded replicas."""
        with self._lock:
            self._wanted = {v.dataset_id: v for v in latest if v.total_rows > min_rows}
            jobs = [
                (v.dataset_id, v.version)
                for v in self._wanted.values()
                if (v.dataset_id, v.version) not in self._queued
                and (v.dataset_id, v.version) not in self._failed
                and not self._is_ready(v)
            ]
            stale = [d for d, r in self._ready.items() if not self._is_current(r.version)]
            for job in jobs:
                self._queued.add(job)
            if jobs or stale:
                self._idle.clear()
        for ds in stale:
            self._jobs.put((ds, -1))  # -1: drop whatever is there for this dataset
        for job in jobs:
            self._jobs.put(job)
        if jobs or stale:
            self._jobs.put(("", 0))  # marks the end of this batch of work

    def replica(self, version: Version) -> Replica | None:
        r = self._ready.get(version.dataset_id)
        return r if r is not None and r.version.version == version.version else None

    def ready(self) -> dict[str, Replica]:
        return dict(self._ready)

    def wait(self, timeout_s: float = 60.0) -> bool:
        """Wait until every queued build and drop is done (tests, benchmarks)."""
        return self._idle.wait(timeout_s)

    def close(self) -> None:
        self._closed = True
        building = self._building
        if building is not None:
            with contextlib.suppress(duckdb.Error):
                building.interrupt()
        self._jobs.put(None)
        self._thread.join(timeout=30)
        with contextlib.suppress(duckdb.Error):
            self._db.execute(f"DETACH {SCHEMA}")
        for leftover in (self.path, self.path.with_name(self.path.name + ".wal")):
            leftover.unlink(missing_ok=True)

    # -- the worker ------------------------------------------------------------------

    def _is_ready(self, v: Version) -> bool:
        r = self._ready.get(v.dataset_id)
        return r is not None and r.version.version == v.version

    def _is_current(self, v: Version) -> bool:
        w = self._wanted.get(v.dataset_id)
        return w is not None and w.version == v.version

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._closed:
                return
            dataset_id, number = job
            try:
                if not dataset_id:
                    with self._lock:
                        if not self._queued:
                            self._idle.set()
                elif number < 0:
                    self._drop(dataset_id)
                else:
                    self._build(dataset_id, number)
            except Exception:  # a replica is an optimisation: the lake still answers
                log.exception("replica work %s failed; queries keep reading the lake", job)

    def _build(self, dataset_id: str, number: int) -> None:
        with self._lock:
            version = self._wanted.get(dataset_id)
            current = version is not None and version.version == number
            used = sum(r.rows for d, r in self._ready.items() if d != dataset_id)
        try:
            if not current or version is None:
                return  # superseded while it waited
            if used + version.total_rows > self.max_rows:
                log.info(
                    "no replica of %s v%d: %d rows would pass the budget of %d",
                    dataset_id, number, used + version.total_rows, self.max_rows,
                )  # fmt: skip
                self._failed.add((dataset_id, number))
                return
            self._drop(dataset_id)
            table = f"{SCHEMA}.{quote_ident(f'{dataset_id}_v{number}')}"
            started = time.perf_counter()
            cur = self._db.cursor()
            self._building = cur
            try:
                cur.execute(f"CREATE TABLE {table} AS {self._scan_sql(version)}")
                rows = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
            except duckdb.Error as e:
                self._failed.add((dataset_id, number))
                log.warning("no replica of %s v%d: %s", dataset_id, number, e)
                with contextlib.suppress(duckdb.Error):
                    cur.execute(f"DROP TABLE IF EXISTS {table}")
                return
            finally:
                self._building = None
                cur.close()
            replica = Replica(version, table, rows[0] if rows else 0, time.perf_counter() - started)
            self._point_at(version, f"SELECT * FROM {table}")
            with self._lock:
                self._ready[dataset_id] = replica
            log.info(
                "replica of %s v%d ready: %d rows in %.1f s",
                dataset_id, number, replica.rows, replica.build_s,
            )  # fmt: skip
        finally:
            with self._lock:
                self._queued.discard((dataset_id, number))

    def _drop(self, dataset_id: str) -> None:
        with self._lock:
            replica = self._ready.pop(dataset_id, None)
        if replica is None:
            return
        # Back to the lake first: a query that binds after this reads the files; one that
        # bound the replica before keeps its transaction's view of the table.
        self._point_at(replica.version, self._scan_sql(replica.version))
        cur = self._db.cursor()
        try:
            cur.execute(f"DROP TABLE IF EXISTS {replica.table}")
        finally:
            cur.close()
