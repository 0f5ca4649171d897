"""Serving replicas: DuckDB-native copies of the latest large versions (docs/decisions.md D24).

The lake (Iceberg tables of Parquet files) stays the source of truth; a replica is a
cache of one immutable version in DuckDB's own storage, one database file per version
(table ``t``).  DuckDB answers from its own format without decompressing Parquet pages and
with a zone map per 2,048 values instead of one per Parquet row group: a point lookup over
5M rows takes ~1.5 ms instead of ~10 ms through ``iceberg_scan``, scans and exports are
faster too (measured in D24).

A replica is the stored table as it is, so only the owning agency's room attaches it
(:mod:`hub.exchange.rooms`, through a hard link in the room's folder); every other reader reads a
copy made for its access profile.  Replicas are built one at a time by a background
thread, only for the latest version of a dataset above the small-copy size, within a row
budget; until one is ready (and for every earlier version, time travel included) the
owner's room reads the lake.  A version never changes, so a replica is exact; when a newer
version becomes the latest, the old replica's file is removed (a room that attached it
keeps its own link until it lets the version go).  The files belong to one process (the
exchange's folder under the cache, ``exchange-<pid>-<random>``) and go when it closes;
folders left by processes that no longer run are removed at start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from catalog.datasets.store import Version
from catalog.sqltext import quote_ident, quote_literal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replica:
    version: Version
    path: Path  # a DuckDB file with the version's rows in table ``t``
    rows: int
    build_s: float


def exchange_folder(cache: Path) -> Path:
    """A new folder for one exchange: a process may hold several (one per hub it opens)."""
    return cache / f"exchange-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale(cache: Path) -> None:
    """Delete the exchange folders (and files of earlier releases) of processes that no
    longer run."""
    for path in cache.glob("exchange-*"):
        pid_text = path.name.removeprefix("exchange-").split("-", 1)[0].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except PermissionError:
            pass  # someone else's process: running


def write_copy(cur: duckdb.DuckDBPyConnection, path: Path, select_sql: str) -> None:
    """Write ``select_sql``'s rows as table ``t`` of a new DuckDB file at ``path``,
    complete or not at all (written under a temporary name, checkpointed, then renamed)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    alias = quote_ident(f"bh_build_{uuid.uuid4().hex[:8]}")
    try:
        cur.execute(f"ATTACH {quote_literal(str(tmp))} AS {alias}")
        try:
            cur.execute(f"CREATE TABLE {alias}.t AS {select_sql}")
        finally:
            cur.execute(f"DETACH {alias}")
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)


class Replicas:
    """Builds and drops replicas in one background thread."""

    def __init__(
        self,
        db: duckdb.DuckDBPyConnection,
        folder: Path,
        *,
        max_rows: int,
        scan_sql: Callable[[Version], str],
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._db = db
        self.max_rows = max_rows
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
        shutil.rmtree(self.folder, ignore_errors=True)

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
            key = (version.dataset_id, version.version)
            if self.replica(version) is None and key not in self._failed:
                self._build(version)

    def _build(self, version: Version) -> None:
        dataset_id, number = version.dataset_id, version.version
        used = sum(r.rows for r in self._ready.values())
        if used + version.total_rows > self.max_rows:
            log.info(
                "no replica of %s v%d: %d rows would pass the budget of %d",
                dataset_id, number, used + version.total_rows, self.max_rows,
            )  # fmt: skip
            self._failed.add((dataset_id, number))
            return
        path = self.folder / f"{dataset_id}-v{number}.duckdb"
        started = time.perf_counter()
        cur = self._building = self._db.cursor()
        try:
            write_copy(cur, path, self._scan_sql(version))
        except duckdb.Error as e:
            self._failed.add((dataset_id, number))
            log.warning("no replica of %s v%d: %s", dataset_id, number, e)
            return
        finally:
            self._building = None
            cur.close()
        # A version never changes: the copy holds exactly its rows.
        replica = Replica(version, path, version.total_rows, time.perf_counter() - started)
        self._ready[dataset_id] = replica
        log.info(
            "replica of %s v%d ready: %d rows in %.1f s",
            dataset_id, number, replica.rows, replica.build_s,
        )  # fmt: skip

    def _drop(self, dataset_id: str) -> None:
        replica = self._ready.pop(dataset_id, None)
        if replica is not None:
            replica.path.unlink(missing_ok=True)  # rooms that attached it hold their own links
