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
        self._failed: set[tuple[str, int]] = set()  # over budget or failed: not retried
        self._wake: queue.SimpleQueue[bool | None] = queue.SimpleQueue()  # None: stop
        self._idle = threading.Event()
        self._idle.set()
        self._building: duckdb.DuckDBPyConnection | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="bh-replicas", daemon=True)
        self._thread.start()

    # -- what the exchange calls -----------------------------------------------------

    def sync(self, latest: Iterable[Version], min_rows: int) -> None:
        """The latest versions changed: replicate the large ones, drop superseded replicas."""
        with self._lock:  # the wake-up is queued before the worker can call itself idle
            self._wanted = {v.dataset_id: v for v in latest if v.total_rows > min_rows}
            self._idle.clear()
            self._wake.put(True)

    def replica(self, version: Version) -> Replica | None:
        r = self._ready.get(version.dataset_id)
        return r if r is not None and r.version.version == version.version else None

    def ready(self) -> dict[str, Replica]:
        return dict(self._ready)

    def wait(self, timeout_s: float = 60.0) -> bool:
        """Wait until the replicas match the latest versions (or could not be built)."""
        return self._idle.wait(timeout_s)

    def close(self) -> None:
        self._closed = True
        building = self._building
        if building is not None:
            with contextlib.suppress(duckdb.Error):
                building.interrupt()
        self._wake.put(None)
        self._thread.join(timeout=30)
        with contextlib.suppress(duckdb.Error):
            self._db.execute(f"DETACH {SCHEMA}")
        for leftover in (self.path, self.path.with_name(self.path.name + ".wal")):
            leftover.unlink(missing_ok=True)

    # -- the worker ------------------------------------------------------------------

    def _work(self) -> None:
        while self._wake.get() is not None and not self._closed:
            try:
                self._reconcile()
            except Exception:  # a replica is an optimisation: the lake still answers
                log.exception("replica work failed; queries keep reading the lake")
            with self._lock:
                if self._wake.empty():
                    self._idle.set()

    def _reconcile(self) -> None:
        """Drop replicas of versions no longer the latest, build the missing ones."""
        with self._lock:
            wanted = dict(self._wanted)
        for dataset_id, replica in list(self._ready.items()):
            latest = wanted.get(dataset_id)
            if latest is None or latest.version != replica.version.version:
                self._drop(dataset_id)
        for version in wanted.values():
            if self._closed:
                return
            if self.replica(version) is None and self._key(version) not in self._failed:
                self._build(version)

    @staticmethod
    def _key(version: Version) -> tuple[str, int]:
        return version.dataset_id, version.version

    def _build(self, version: Version) -> None:
        dataset_id, number = self._key(version)
        used = sum(r.rows for r in self._ready.values())
        if used + version.total_rows > self.max_rows:
            log.info(
                "no replica of %s v%d: %d rows would pass the budget of %d",
                dataset_id, number, used + version.total_rows, self.max_rows,
            )  # fmt: skip
            self._failed.add((dataset_id, number))
            return
        table = f"{SCHEMA}.{quote_ident(f'{dataset_id}_v{number}')}"
        started = time.perf_counter()
        cur = self._db.cursor()
        self._building = cur
        try:
            cur.execute(f"CREATE TABLE {table} AS {self._scan_sql(version)}")
        except duckdb.Error as e:
            self._failed.add((dataset_id, number))
            log.warning("no replica of %s v%d: %s", dataset_id, number, e)
            with contextlib.suppress(duckdb.Error):
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            return
        finally:
            self._building = None
            cur.close()
        # A version never changes: the copy holds exactly its rows.
        replica = Replica(version, table, version.total_rows, time.perf_counter() - started)
        self._point_at(version, f"SELECT * FROM {table}")
        self._ready[dataset_id] = replica
        log.info(
            "replica of %s v%d ready: %d rows in %.1f s",
            dataset_id, number, replica.rows, replica.build_s,
        )  # fmt: skip

    def _drop(self, dataset_id: str) -> None:
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
