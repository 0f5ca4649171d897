"""The exchange engine: DuckDB over the lake's Iceberg tables, sandboxed per query.

One in-memory DuckDB database per process holds a view per (dataset, version)
over ``iceberg_scan`` of that version's metadata file.  User SQL is checked
(:mod:`hub.sqlcheck`), its dataset names are rewritten to those views, and it
runs on its own cursor with DuckDB's sandbox on (no file access outside the
lake, configuration locked), a row limit and a time limit.  Results stream out
as Arrow record batches.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from catalog.errors import AccessDenied, DatasetNotFound, QueryFailed, QueryTimeout
from catalog.policy import can_read
from catalog.store import CatalogStore, DatasetRecord, Principal, Version
from connectors.duck import connect
from hub.sqlcheck import check_sql


@dataclass
class QueryResult:
    """A running query: its schema, a stream of batches and what it read."""

    schema: pa.Schema
    versions: dict[str, int]
    classification: str
    started: float
    _reader: Iterator[pa.RecordBatch]
    _cursor: duckdb.DuckDBPyConnection
    _timer: threading.Timer
    max_rows: int
    row_count: int = 0
    truncated: bool = False
    finished: float | None = field(default=None)

    @property
    def query_ms(self) -> float:
        end = self.finished if self.finished is not None else time.perf_counter()
        return round((end - self.started) * 1000, 2)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield result batches, stopping at ``max_rows``; closes the cursor at the end."""
        try:
            for batch in self._reader:
                room = self.max_rows - self.row_count
                if batch.num_rows > room:
                    batch = batch.slice(0, room)
                    self.truncated = True
                self.row_count += batch.num_rows
                if batch.num_rows:
                    yield batch
                if self.truncated:
                    break
        except duckdb.InterruptException:
            raise QueryTimeout("query ran past its time limit and was stopped") from None
        except duckdb.Error as e:
            raise QueryFailed(_first_line(e)) from None
        finally:
            self.close()

    def to_table(self) -> pa.Table:
        return pa.Table.from_batches(list(self.batches()), schema=self.schema)

    def close(self) -> None:
        if self.finished is None:
            self.finished = time.perf_counter()
            self._timer.cancel()
            self._cursor.close()

    def meta(self) -> dict[str, Any]:
        return {
            "row_count": self.row_count,
            "truncated": self.truncated,
            "query_ms": self.query_ms,
            "versions": self.versions,
            "classification": self.classification,
        }


def _first_line(e: BaseException) -> str:
    text = str(e)
    return text.splitlines()[0] if text else type(e).__name__


_RANK = {"general": 0, "important": 1, "core": 2}


class Exchange:
    """Answers SQL over published datasets for a principal."""

    def __init__(
        self,
        store: CatalogStore,
        *,
        lake_root: str | None,
        batch_rows: int = 65_536,
        threads: int | None = None,
    ) -> None:
        self.store = store
        self.lake_root = lake_root
        self.batch_rows = batch_rows
        self._lock = threading.Lock()
        self._views: set[str] = set()
        config = {"threads": str(threads)} if threads else {}
        self._db = connect("iceberg", config=config)
        if lake_root:
            self._db.execute("SET allowed_directories=[?]", [lake_root])
        self._db.execute("SET enable_external_access=false")
        self._db.execute("SET lock_configuration=true")

    def close(self) -> None:
        self._db.close()

    def readable(self, principal: Principal) -> dict[str, DatasetRecord]:
        """Datasets the principal may read."""
        return {d.id: d for d in self.store.list_datasets() if can_read(principal, d)}

    def _view(self, version: Version) -> str:
        name = f"__bh_{version.dataset_id}_v{version.version}"
        if name not in self._views:
            with self._lock:
                if name not in self._views:
                    location = version.metadata_location.replace("'", "''")
                    self._db.execute(
                        f'CREATE VIEW IF NOT EXISTS "{name}" AS SELECT * FROM iceberg_scan('
                        f"'{location}', snapshot_from_id={version.snapshot_id})"
                    )
                    self._views.add(name)
        return name

    def resolve(self, dataset_id: str, principal: Principal, version: int | None) -> Version:
        """The version of a dataset a principal asked for, after the access check."""
        record = self.store.get_dataset(dataset_id)
        if not can_read(principal, record):
            raise AccessDenied(f"you may not read dataset {dataset_id!r}", dataset=dataset_id)
        return self.store.get_version(dataset_id, version)

    def query(
        self,
        sql: str,
        principal: Principal,
        *,
        versions: dict[str, int] | None = None,
        max_rows: int = 5_000_000,
        timeout_s: float = 30.0,
    ) -> QueryResult:
        """Check and start a query; iterate :meth:`QueryResult.batches` for the rows."""
        started = time.perf_counter()
        every = self.store.list_datasets()
        readable = {d.id: d for d in every if can_read(principal, d)}
        checked = check_sql(sql, readable, known={d.id for d in every})
        for name in versions or {}:
            if name not in checked.datasets:
                raise (
                    DatasetNotFound(name)
                    if name not in readable
                    else AccessDenied(
                        f"version given for {name!r}, which the query does not read", dataset=name
                    )
                )
        used = {d: self.resolve(d, principal, (versions or {}).get(d)) for d in checked.datasets}
        views = {d: self._view(v) for d, v in used.items()}
        rendered = checked.render(views.__getitem__)
        classification = max(
            (readable[d].classification for d in used), key=_RANK.__getitem__, default="general"
        )
        cur = self._db.cursor()
        timer = threading.Timer(timeout_s, cur.interrupt)
        timer.daemon = True
        timer.start()
        try:
            rel = cur.sql(f"SELECT * FROM ({rendered}) AS _q LIMIT {max_rows + 1}")
            reader = rel.to_arrow_reader(self.batch_rows)
            # Run up to the first batch here, so that a failing query is a clean error
            # before any response byte is sent.
            first = next(iter(reader), None)
        except duckdb.InterruptException:
            timer.cancel()
            cur.close()
            raise QueryTimeout("query ran past its time limit and was stopped") from None
        except duckdb.Error as e:
            timer.cancel()
            cur.close()
            raise QueryFailed(_first_line(e)) from None
        return QueryResult(
            schema=reader.schema,
            versions={d: v.version for d, v in used.items()},
            classification=classification,
            started=started,
            _reader=itertools.chain([first] if first is not None else [], reader),
            _cursor=cur,
            _timer=timer,
            max_rows=max_rows,
        )
