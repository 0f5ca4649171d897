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
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.table import Table

from catalog.errors import DatasetNotFound, SchemaDrift
from catalog.manifest import SchemaPolicy, SyncMode

CURSOR_PROP = "blockhub.cursor"
RUN_PROP = "blockhub.run-id"


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


@dataclass(frozen=True)
class StagedFile:
    path: str
    rows: int
    bytes: int


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
        self.catalog: Catalog = SqlCatalog(
            "blockhub", uri=catalog_uri, warehouse=warehouse, **(properties or {})
        )
        with contextlib.suppress(NamespaceAlreadyExistsError):
            self.catalog.create_namespace(namespace)

    def _ident(self, dataset_id: str) -> str:
        return f"{self.namespace}.{dataset_id}"

    def table(self, dataset_id: str) -> Table:
        try:
            return self.catalog.load_table(self._ident(dataset_id))
        except NoSuchTableError:
            raise DatasetNotFound(dataset_id) from None

    def exists(self, dataset_id: str) -> bool:
        return self.catalog.table_exists(self._ident(dataset_id))

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
                table = self.catalog.load_table(ident)
            return table
        table = self.catalog.load_table(ident)
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
        return self.catalog.load_table(ident)

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
        table = self.table(dataset_id)
        target = table.schema().as_arrow()
        # Write with the table's own column order and types so add_files accepts them.
        target = pa.schema([target.field(f.name) for f in target if f.name in schema.names])
        fs, base = self._filesystem(table.location())
        fs.create_dir(f"{base}/data", recursive=True)
        staged: list[StagedFile] = []
        writer: pq.ParquetWriter | None = None
        path = ""
        rows = 0
        rows_per_file = 4_000_000

        def close() -> None:
            nonlocal writer
            if writer is not None:
                writer.close()
                info = fs.get_file_info(path)
                staged.append(StagedFile(_uri(table.location(), path, base), rows, info.size or 0))
                writer = None

        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                batch = _conform(batch, target)
                if writer is None:
                    path = f"{base}/data/{run_id}-{len(staged):05d}-{uuid.uuid4().hex[:8]}.parquet"
                    writer = pq.ParquetWriter(path, target, filesystem=fs, compression="zstd")
                    rows = 0
                writer.write_batch(batch)
                rows += batch.num_rows
                if rows >= rows_per_file:
                    close()
            close()
        except BaseException:
            if writer is not None:
                writer.close()
                staged.append(StagedFile(_uri(table.location(), path, base), rows, 0))
            self.discard(staged)
            raise
        return staged

    def discard(self, files: Iterable[StagedFile]) -> None:
        """Delete staged files that will not be committed (best effort)."""
        for f in files:
            try:
                fs, path = self._filesystem(f.path)
                fs.delete_file(path)
            except OSError:
                pass

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
    ) -> Snapshot:
        """Publish staged files in one atomic commit that also carries the cursor."""
        table = self.table(dataset_id)
        props = {CURSOR_PROP: json.dumps(cursor), RUN_PROP: run_id}
        paths = [f.path for f in files]
        if mode == "append":
            table.add_files(paths, snapshot_properties=props)
        elif mode == "replace":
            with table.transaction() as tx:
                tx.delete(AlwaysTrue(), snapshot_properties=props)
                tx.add_files(paths, snapshot_properties=props)
        elif mode == "merge":
            if not key:
                raise ValueError("merge needs a key")
            data = pa.concat_tables([self._read_staged(p) for p in paths]) if paths else None
            if data is not None:
                table.upsert(data, join_cols=key, snapshot_properties=props)
            self.discard(files)  # upsert wrote its own files
        else:  # pragma: no cover - SyncMode is closed
            raise ValueError(mode)
        snap = self.current(dataset_id)
        assert snap is not None
        return snap

    def _read_staged(self, path: str) -> pa.Table:
        fs, local = self._filesystem(path if "://" in path else f"file://{path}")
        return pq.read_table(local, filesystem=fs)

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


def _snapshot(dataset_id: str, table: Table, snap: Any) -> Snapshot:
    props: dict[str, str] = snap.summary.additional_properties if snap.summary else {}
    cursor_text = props.get(CURSOR_PROP)
    return Snapshot(
        dataset_id=dataset_id,
        snapshot_id=snap.snapshot_id,
        # Scanning this metadata file with snapshot_from_id=snapshot_id reads this state.
        metadata_location=table.metadata_location,
        total_rows=int(props.get("total-records", 0)),
        added_rows=int(props.get("added-records", 0)),
        committed_at=datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=UTC),
        cursor=json.loads(cursor_text) if cursor_text else None,
        run_id=props.get(RUN_PROP),
    )


def _conform(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(target):
        return batch
    cols = []
    for field in target:
        idx = batch.schema.get_field_index(field.name)
        if idx < 0:
            cols.append(pa.nulls(batch.num_rows, field.type))
        else:
            cols.append(batch.column(idx).cast(field.type))
    return pa.RecordBatch.from_arrays(cols, schema=target)


def _uri(location: str, path: str, base: str) -> str:
    scheme = urlparse(location).scheme
    if scheme in ("", "file"):
        return path
    return f"{scheme}://{path}"
