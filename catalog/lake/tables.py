"""The lake: one Apache Iceberg table per dataset, through pyiceberg's SQL catalog.

Writes are two-stage so that a run is a transaction: batches are first staged as
Parquet files under the table's data folder (memory bounded by one batch), then
added to the table in a single atomic commit that also records the run's cursor
in the snapshot summary.  A crash before the commit leaves only unreferenced
files (removed by :meth:`Lake.remove_orphans`); the table stays at its last good
snapshot, and the cursor that belongs to that snapshot is read back from it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
)
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, In, Or
from pyiceberg.table import Table, TableProperties, Transaction, _parquet_files_to_data_files
from sqlalchemy import select

from catalog.errors import CommitUnsettled, Conflict, DatasetNotFound, SchemaDrift, unavailable
from catalog.lake.deletes import PublishFiles, delete_data_file, write_position_deletes
from catalog.lake.prefetch import prefetch as prefetch_items
from catalog.lake.transaction import transaction
from catalog.vocabulary import SchemaPolicy, SyncMode

#: ``Lake.commit(expect_snapshot=...)`` default: commit whatever the table's state.
ANY_SNAPSHOT: object = object()

CURSOR_PROP = "blockhub.cursor"
RUN_PROP = "blockhub.run-id"
# A connector's own resume state (e.g. which files were loaded), committed with the data.
STATE_PROP = "blockhub.state"
_Rows = TypeVar("_Rows", pa.RecordBatch, pa.Table)


@dataclass(frozen=True)
class Snapshot:
    """One committed state of a dataset's table."""

    dataset_id: str
    snapshot_id: int
    metadata_location: str
    total_rows: int
    added_rows: int
    committed_at: datetime
    cursor: Any
    run_id: str | None
    state: Any = None


@dataclass(frozen=True)
class StagedFile:
    """A file staged for the next commit: a data file, or — with ``deletes`` — an Iceberg
    position-delete file of ``rows`` rows of the staged data file at that path."""

    path: str
    rows: int
    bytes: int
    deletes: str | None = None

    def to_list(self) -> list[Any]:
        return [self.path, self.rows, self.bytes, *([self.deletes] if self.deletes else [])]

    @classmethod
    def from_list(cls, item: Sequence[Any]) -> StagedFile:
        path, rows, size, *rest = item
        return cls(str(path), int(rows), int(size), str(rest[0]) if rest and rest[0] else None)


class Lake:
    """Iceberg tables of the datasets, in one namespace of one SQL catalog."""

    def __init__(
        self,
        catalog_uri: str,
        warehouse: str,
        *,
        namespace: str = "blockhub",
        properties: dict[str, str] | None = None,
    ) -> None:
        self.namespace = namespace
        self.warehouse = warehouse
        self._tables = threading.local()  # dataset id -> Table (see _load)
        self.catalog = SqlCatalog(
            "blockhub", uri=catalog_uri, warehouse=warehouse, **(properties or {})
        )
        with contextlib.suppress(NamespaceAlreadyExistsError):
            self.catalog.create_namespace(namespace)

    def _ident(self, dataset_id: str) -> str:
        return f"{self.namespace}.{dataset_id}"

    def table(self, dataset_id: str) -> Table:
        try:
            return self._load(dataset_id)
        except NoSuchTableError:
            raise DatasetNotFound(dataset_id) from None

    def _load(self, dataset_id: str) -> Table:
        """The table, read again only when its metadata pointer has moved.

        Loading reads and parses the metadata JSON (~3.4 ms); a run asks for its table
        6-9 times.  Checking the pointer is one indexed SELECT of the catalog row, so a
        commit by anyone else — another process, another Table object — is always seen.
        Kept per thread: a pyiceberg Table updates itself in place when it commits.
        """
        ident = self._ident(dataset_id)
        cache: dict[str, Table] = self._tables.__dict__
        cached = cache.get(dataset_id)
        if cached is not None:
            namespace, name = ident.split(".", 1)
            with self.catalog.engine.connect() as conn:
                location = conn.execute(
                    select(IcebergTables.metadata_location).where(
                        IcebergTables.catalog_name == self.catalog.name,
                        IcebergTables.table_namespace == namespace,
                        IcebergTables.table_name == name,
                    )
                ).scalar_one_or_none()
            if location is not None and location == cached.metadata_location:
                return cached
        table = self.catalog.load_table(ident)
        cache[dataset_id] = table
        return table

    def exists(self, dataset_id: str) -> bool:
        """Whether the dataset has a table (loaded and kept, as the caller reads it next)."""
        try:
            self._load(dataset_id)
        except NoSuchTableError:
            return False
        return True

    def ensure_table(
        self,
        dataset_id: str,
        schema: pa.Schema,
        *,
        identifier_fields: list[str] | None = None,
        policy: SchemaPolicy = "evolve",
    ) -> Table:
        """Create the table, or reconcile its schema with ``schema`` under ``policy``.

        New columns are added under ``evolve``; under ``freeze`` any difference is a
        :class:`SchemaDrift` that lists it.  Columns are never dropped or retyped
        here: that needs a steward's decision.
        """
        ident = self._ident(dataset_id)
        if not self.catalog.table_exists(ident):
            table = self.catalog.create_table(ident, schema=schema)
            if identifier_fields:
                with table.update_schema() as upd:
                    upd.set_identifier_fields(*identifier_fields)
                table = self._load(dataset_id)
            return table
        table = self._load(dataset_id)
        current = {f.name: f for f in table.schema().as_arrow()}
        added = [f for f in schema if f.name not in current]
        if not added:
            return table
        if policy == "freeze":
            raise SchemaDrift(
                f"dataset {dataset_id!r}: source has columns the table does not "
                f"({', '.join(f.name for f in added)}) and schema_policy is 'freeze'",
                dataset=dataset_id,
                added=[f"{f.name}: {f.type}" for f in added],
            )
        with table.update_schema() as upd:
            upd.union_by_name(pa.schema(added))
        return self._load(dataset_id)

    # -- staging -------------------------------------------------------------------

    def _filesystem(self, location: str) -> tuple[pafs.FileSystem, str]:
        fs, path = pafs.FileSystem.from_uri(location)
        return fs, path

    def stage(
        self, dataset_id: str, run_id: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema
    ) -> list[StagedFile]:
        """Write batches as Parquet files in the table's data folder; nothing is committed.

        Files roll over every ``rows_per_file`` rows so that memory stays flat.
        """
        return self.stage_parts(dataset_id, run_id, [row_groups(batches)], schema, prefetch=True)

    def stage_parts(
        self,
        dataset_id: str,
        run_id: str,
        parts: Sequence[Iterable[pa.RecordBatch]],
        schema: pa.Schema,
        *,
        prefetch: bool = False,
    ) -> list[StagedFile]:
        """Stage several streams of batches at once, each in its own files and thread.

        Parquet encoding holds one core per writer, so a stream that can be cut into
        independent parts (the gate's passing rows) is written that much sooner on a
        machine with the cores to spare.  Files come back in the order of ``parts``;
        if any part fails, every file staged here is removed and the error raised.
        With ``prefetch`` each part is read in a thread of its own while it is written.
        """
        table = self.table(dataset_id)
        target = table.schema().as_arrow()
        # Write with the table's own column order and types so add_files accepts them.
        target = pa.schema([target.field(f.name) for f in target if f.name in schema.names])
        fs, base = self._filesystem(table.location())
        fs.create_dir(f"{base}/data", recursive=True)
        location = table.location()
        staged: list[list[StagedFile]] = [[] for _ in parts]
        errors: list[BaseException] = []
        stop = threading.Event()

        def write(n: int, batches: Iterable[pa.RecordBatch]) -> None:
            prefix = f"{run_id}-" if len(parts) == 1 else f"{run_id}-p{n}-"
            try:
                _write_files(
                    fs,
                    base,
                    location,
                    prefix,
                    prefetch_items(batches) if prefetch else batches,
                    target,
                    staged[n],
                    stop,
                )
            except BaseException as e:
                errors.append(e)
                stop.set()

        if len(parts) == 1:
            write(0, parts[0])
        else:
            threads = [
                threading.Thread(target=write, args=(n, b), name=f"blockhub-stage-{n}")
                for n, b in enumerate(parts)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        files = [f for part in staged for f in part]
        if errors:
            self.discard(files)
            raise errors[0]
        return files

    def dedupe_staged(
        self,
        dataset_id: str,
        run_id: str,
        files: list[StagedFile],
        key: list[str],
        cursor: str | None,
    ) -> list[StagedFile]:
        """Keep one row per key in a merge increment: the one with the highest cursor,
        then the last read.  Only the key columns are read unless there are duplicates."""
        keys = pa.concat_tables([self._read_staged(f.path, columns=key) for f in files])
        if keys.num_rows == keys.group_by(key).aggregate([]).num_rows:
            return files
        data = pa.concat_tables([self._read_staged(f.path) for f in files])
        data = data.append_column("__pos", pa.array(range(data.num_rows), pa.int64()))
        order = [(cursor, "ascending")] if cursor else []
        data = data.sort_by([*order, ("__pos", "ascending")])
        data = data.set_column(
            data.schema.get_field_index("__pos"),
            "__pos",
            pa.array(range(data.num_rows), pa.int64()),
        )
        last = data.group_by(key).aggregate([("__pos", "max")]).column("__pos_max")
        kept = data.take(last).drop_columns(["__pos"])
        schema = self._read_staged(files[0].path).schema
        staged = self.stage(dataset_id, run_id, kept.cast(schema).to_batches(), schema)
        self.discard(files)
        return staged

    def stage_deletes(
        self,
        dataset_id: str,
        run_id: str,
        files: Sequence[StagedFile],
        positions: Sequence[np.ndarray],
    ) -> list[StagedFile]:
        """Position-delete files leaving rows ``positions[i]`` out of staged file ``files[i]``.

        One delete file per data file that has rows to leave out (catalog.lake.deletes); the
        result goes to :meth:`commit` with the data files.
        """
        table = self.table(dataset_id)
        fs, base = self._filesystem(table.location())
        location = table.location()
        out: list[StagedFile] = []
        try:
            for f, pos in zip(files, positions, strict=True):
                if len(pos) == 0:
                    continue
                path = f"{base}/data/{run_id}-deletes-{uuid.uuid4().hex[:12]}.parquet"
                size = write_position_deletes(fs, path, f.path, pos)
                out.append(StagedFile(_uri(location, path, base), len(pos), size, deletes=f.path))
        except BaseException:
            self.discard(out)
            raise
        return out

    def discard(self, files: Iterable[StagedFile]) -> None:
        """Delete staged files that will not be committed (best effort)."""
        for f in files:
            try:
                fs, path = self._filesystem(f.path)
                fs.delete_file(path)
            except OSError:
                pass

    def remove_orphans(self, dataset_id: str, *, older_than_s: float = 3600.0) -> list[str]:
        """Delete data files that no snapshot references: what a killed run had staged.

        Only files older than ``older_than_s`` go, so that the staged files of a run
        still in progress (not referenced yet either) are left alone.
        """
        table = self.table(dataset_id)
        fs, base = self._filesystem(table.location())
        try:
            infos = fs.get_file_info(pafs.FileSelector(f"{base}/data", allow_not_found=True))
        except OSError:
            return []
        referenced: set[str] = set()
        if table.current_snapshot() is not None:
            for path in table.inspect.all_files().column("file_path").to_pylist():
                referenced.add(self._filesystem(path)[1] if "://" in path else path)
        cutoff = datetime.now(tz=UTC).timestamp() - older_than_s
        removed = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
                continue
            if info.path in referenced or info.mtime is None or info.mtime.timestamp() > cutoff:
                continue
            with contextlib.suppress(OSError):
                fs.delete_file(info.path)
                removed.append(info.path)
        return removed

    # -- commit --------------------------------------------------------------------

    def commit(
        self,
        dataset_id: str,
        files: list[StagedFile],
        *,
        mode: SyncMode,
        cursor: Any,
        run_id: str,
        key: list[str] | None = None,
        state: Any = None,
        expect_snapshot: int | object | None = ANY_SNAPSHOT,
    ) -> Snapshot:
        """Publish staged files in one atomic commit that also carries the cursor.

        ``replace`` and ``merge`` delete and add in one transaction: readers see the
        table before or after, never in between.  Only the last snapshot of the
        transaction carries the run id, so it alone is a version of the dataset.

        ``expect_snapshot`` is the snapshot the run read its cursor from: if another run
        committed since, this one would publish rows that run already published, so it
        is refused (:class:`Conflict`) — checked here, and again by the catalog's
        compare-and-swap of the metadata pointer at commit time.
        """
        table = self.table(dataset_id)
        if expect_snapshot is not ANY_SNAPSHOT:
            now = table.current_snapshot()
            now_id = now.snapshot_id if now is not None else None
            if now_id != expect_snapshot:
                raise Conflict(
                    f"dataset {dataset_id!r} was published by another run while this one was "
                    "reading; nothing was published (run it again)",
                    dataset=dataset_id,
                    expected_snapshot=str(expect_snapshot),
                    current_snapshot=str(now_id),
                )
        try:
            self._commit(
                table, files, mode=mode, cursor=cursor, run_id=run_id, key=key, state=state
            )
        except CommitFailedException as e:
            raise Conflict(
                f"dataset {dataset_id!r} changed during the commit ({e}); nothing was published",
                dataset=dataset_id,
            ) from None
        except Exception as e:
            # The lake's catalog went away during the commit: it may or may not have moved
            # the table's pointer.  The caller must not delete the staged files.
            if unavailable(e) is None:
                raise
            raise CommitUnsettled(dataset_id, run_id, "lake catalog") from e
        try:
            snap = self.current(dataset_id)
        except Exception as e:  # committed, but it cannot be read back now
            if unavailable(e) is None:
                raise
            raise CommitUnsettled(dataset_id, run_id, "lake catalog") from e
        assert snap is not None
        return snap

    def _commit(
        self,
        table: Table,
        files: list[StagedFile],
        *,
        mode: SyncMode,
        cursor: Any,
        run_id: str,
        key: list[str] | None,
        state: Any,
    ) -> None:
        props = {CURSOR_PROP: json.dumps(cursor), RUN_PROP: run_id}
        if state is not None:
            props[STATE_PROP] = json.dumps(state, ensure_ascii=False)
        data = [f for f in files if f.deletes is None]
        if mode == "append":
            with transaction(table) as tx:
                _add_files(tx, files, props)
        elif mode == "replace":
            with transaction(table) as tx:
                if table.current_snapshot() is not None:
                    tx.delete(AlwaysTrue())
                _add_files(tx, files, props)
        elif mode == "merge":
            if not key:
                raise ValueError("merge needs a key")
            with transaction(table) as tx:
                match = self._key_filter(data, [f for f in files if f.deletes], key)
                if match is not None and table.current_snapshot() is not None:
                    tx.delete(match)
                _add_files(tx, files, props)
        else:  # pragma: no cover - SyncMode is closed
            raise ValueError(mode)

    def _key_filter(
        self, data: list[StagedFile], deletes: list[StagedFile], key: list[str]
    ) -> BooleanExpression | None:
        """A filter matching the table rows whose key is among the staged rows' keys
        (the rows a staged delete file leaves out do not count: they are not published)."""
        if not data:
            return None
        dropped = {d.deletes: self._read_staged(d.path, columns=["pos"]).column(0) for d in deletes}
        parts = []
        for f in data:
            part = self._read_staged(f.path, columns=key)
            if f.path in dropped:
                keep = np.ones(part.num_rows, dtype=bool)
                keep[dropped[f.path].to_numpy()] = False
                part = part.filter(pa.array(keep))
            parts.append(part)
        keys = pa.concat_tables(parts)
        if keys.num_rows == 0:
            return None
        if len(key) == 1:
            values = pc.unique(keys.column(0)).drop_null().to_pylist()
            return _in(key[0], values) if values else None
        rows = keys.group_by(key).aggregate([]).to_pylist()
        terms: list[BooleanExpression] = [And(*[_eq(k, row[k]) for k in key]) for row in rows]
        return Or(*terms) if len(terms) > 1 else terms[0]

    def boundary_keys(
        self, dataset_id: str, cursor_column: str, value: Any, key: list[str]
    ) -> pa.Table:
        """Key columns of the rows whose cursor equals ``value`` (the last watermark)."""
        table = self.table(dataset_id)
        if table.current_snapshot() is None:
            return pa.table({k: pa.array([], table.schema().as_arrow().field(k).type) for k in key})
        scan = table.scan(row_filter=_eq(cursor_column, value), selected_fields=tuple(key))
        return scan.to_arrow()

    def _read_staged(self, path: str, columns: list[str] | None = None) -> pa.Table:
        fs, local = self._filesystem(path if "://" in path else f"file://{path}")
        return pq.read_table(local, filesystem=fs, columns=columns)

    # -- reading state -----------------------------------------------------------

    def current(self, dataset_id: str) -> Snapshot | None:
        """The table's current snapshot, or None for a table never committed."""
        table = self.table(dataset_id)
        snap = table.current_snapshot()
        if snap is None:
            return None
        return _snapshot(dataset_id, table, snap)

    def snapshots(self, dataset_id: str) -> list[Snapshot]:
        """Every snapshot committed by blockhub (with a run id), oldest first."""
        table = self.table(dataset_id)
        out = []
        for snap in table.snapshots():
            props = snap.summary.additional_properties if snap.summary else {}
            if RUN_PROP in props:
                out.append(_snapshot(dataset_id, table, snap))
        return out

    def drop(self, dataset_id: str) -> None:
        self.catalog.drop_table(self._ident(dataset_id))
        self._tables.__dict__.pop(dataset_id, None)


def _snapshot(dataset_id: str, table: Table, snap: Any) -> Snapshot:
    props: dict[str, str] = snap.summary.additional_properties if snap.summary else {}
    cursor_text = props.get(CURSOR_PROP)
    state_text = props.get(STATE_PROP)
    return Snapshot(
        dataset_id=dataset_id,
        snapshot_id=snap.snapshot_id,
        # Scanning this metadata file with snapshot_from_id=snapshot_id reads this state.
        metadata_location=table.metadata_location,
        # Rows left out by position-delete files (the quality gate's drop-rows) do not count.
        total_rows=int(props.get("total-records", 0)) - int(props.get("total-position-deletes", 0)),
        added_rows=int(props.get("added-records", 0)) - int(props.get("added-position-deletes", 0)),
        committed_at=datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=UTC),
        cursor=json.loads(cursor_text) if cursor_text else None,
        run_id=props.get(RUN_PROP),
        state=json.loads(state_text) if state_text else None,
    )


def _dictionary_columns(batch: pa.RecordBatch | pa.Table) -> list[str]:
    """Text columns worth dictionary-encoding: few distinct values in the first batch.

    Dictionary-encoding every column (pyarrow's default) made staging 1.6x slower on the
    hotline table, whose names, phones, addresses and texts are nearly all distinct
    (bench/ingest.py); codes and categories still compress well with it.

    A column is first counted over a fifth of the sample: more distinct values there than
    the limit means more in the whole sample too, so the answer is the same and the
    nearly-unique columns (the long ones) are hashed five times less — a small
    increment's staging waited 10-50 ms for this.
    """
    sample = batch.slice(0, 10_000)  # enough to tell codes from free text, at a fixed cost
    limit = max(16, sample.num_rows // 20)
    out = []
    for f, col in zip(sample.schema, sample.columns, strict=True):
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            if pc.count_distinct(col.slice(0, 2_000)).as_py() > limit:
                continue
            if pc.count_distinct(col).as_py() <= limit:
                out.append(f.name)
    return out


def row_groups(
    batches: Iterable[pa.RecordBatch], rows: int = 100_000, max_bytes: int = 64 << 20
) -> Iterator[pa.Table]:
    """The batches gathered into row groups of at least ``rows`` rows (or ``max_bytes`` of
    Arrow data, for wide rows: memory stays bounded), the first ones smaller: one batch,
    then two, four and so on until a group reaches ``rows``.

    A source that streams small batches (a server query, connectors.postgres) is then
    encoded group by group while the rest is still being read: a 50,000-row increment
    costs its read plus the encoding of a small last group instead of its read plus the
    encoding of all of it.  Large batches pass one per group, as they come.  (Counted in
    batches, not rows: an incremental read's first batch is a few rows short, the rows
    already loaded at the watermark dropped.)
    """
    want = 1
    held: list[pa.RecordBatch] = []
    count = size = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        held.append(batch)
        count += batch.num_rows
        size += batch.nbytes
        if len(held) >= want or count >= rows or size >= max_bytes:
            yield pa.Table.from_batches(held)
            held, count, size, want = [], 0, 0, want * 2
    if held:
        yield pa.Table.from_batches(held)


def _write_files(
    fs: pafs.FileSystem,
    base: str,
    location: str,
    prefix: str,
    batches: Iterable[pa.RecordBatch | pa.Table],
    target: pa.Schema,
    staged: list[StagedFile],
    stop: threading.Event,
    rows_per_file: int = 4_000_000,
) -> None:
    """One writer's loop of :meth:`Lake.stage_parts`: zstd Parquet files of up to
    ``rows_per_file`` rows in the table's schema, appended to ``staged`` as they close
    (a file cut short by an error is appended too, so that it can be removed).  Each
    item (a batch, or a table of several: :func:`row_groups`) is one row group."""
    writer: pq.ParquetWriter | None = None
    path = ""
    rows = 0
    dictionary: list[str] | None = None

    def close(size: bool = True) -> None:
        nonlocal writer
        if writer is not None:
            writer.close()
            written = (fs.get_file_info(path).size or 0) if size else 0
            staged.append(StagedFile(_uri(location, path, base), rows, written))
            writer = None

    try:
        for batch in batches:
            if stop.is_set():
                raise RuntimeError("staging stopped: another part failed")
            if batch.num_rows == 0:
                continue
            batch = _conform(batch, target)
            if dictionary is None:
                dictionary = _dictionary_columns(batch)
            if writer is None:
                path = f"{base}/data/{prefix}{len(staged):05d}-{uuid.uuid4().hex[:8]}.parquet"
                writer = pq.ParquetWriter(
                    path,
                    target,
                    filesystem=fs,
                    compression="zstd",
                    use_dictionary=dictionary,
                )
                rows = 0
            writer.write(batch, row_group_size=batch.num_rows)
            rows += batch.num_rows
            if rows >= rows_per_file:
                close()
        close()
    except BaseException:
        close(size=False)
        raise


def _add_files(tx: Transaction, files: list[StagedFile], props: dict[str, str]) -> None:
    """Add staged data and position-delete files to the table in one snapshot.

    What ``Transaction.add_files`` does for data files (a name mapping for files written
    without field ids, a data file per path read from its footer), through
    :class:`catalog.lake.deletes.PublishFiles` so that delete files go in the same snapshot.
    Staged file names are unique by construction (run id + random suffix), so pyiceberg's
    duplicate check — a read of every manifest, growing with the table's history — is
    not made.
    """
    meta = tx.table_metadata
    if meta.name_mapping() is None:
        tx.set_properties(
            {TableProperties.DEFAULT_NAME_MAPPING: meta.schema().name_mapping.model_dump_json()}
        )
        meta = tx.table_metadata
    producer = PublishFiles(tx, props)
    data = [f.path for f in files if f.deletes is None]
    for data_file in _parquet_files_to_data_files(
        table_metadata=meta, file_paths=data, io=tx._table.io
    ):
        producer.append_data_file(data_file)
    for f in files:
        if f.deletes is not None:
            producer.append_data_file(
                delete_data_file(f.path, f.rows, f.bytes, f.deletes, meta.default_spec_id)
            )
    producer.commit()


# pyiceberg's expression classes are pydantic models whose generated signatures mypy
# misreads; these two wrappers keep the ignores in one place.
def _eq(column: str, value: Any) -> BooleanExpression:
    return EqualTo(column, value)  # type: ignore[call-arg, arg-type]


def _in(column: str, values: list[Any]) -> BooleanExpression:
    return In(column, values)  # type: ignore[call-arg, arg-type]


def _conform(batch: _Rows, target: pa.Schema) -> _Rows:
    if batch.schema.equals(target):
        return batch
    cols = []
    for field in target:
        idx = batch.schema.get_field_index(field.name)
        if idx < 0:
            cols.append(pa.nulls(batch.num_rows, field.type))
        else:
            cols.append(batch.column(idx).cast(field.type))
    if isinstance(batch, pa.Table):
        return pa.Table.from_arrays(cols, schema=target)
    return pa.RecordBatch.from_arrays(cols, schema=target)


def _uri(location: str, path: str, base: str) -> str:
    scheme = urlparse(location).scheme
    if scheme in ("", "file"):
        return path
    return f"{scheme}://{path}"
