"""Iceberg position-delete files: rows left out of a published file without rewriting it.

The quality gate's ``drop-rows`` policy publishes a staged batch minus its failing rows.
Writing the passing rows again costs a decode and an encode of the whole batch (1.5–2 s a
million rows on one core here, D31); an Iceberg v2 *position-delete file* says the same in
a few kilobytes: which rows (data file path, row position) of which files are not part of
the table.  Every Iceberg reader applies them — DuckDB's ``iceberg_scan``, pyiceberg's
scans and pyiceberg's own copy-on-write deletes (``merge`` runs) among them.

pyiceberg 0.12 (the pinned version) reads position deletes but writes none, so this module
writes them:

- :func:`write_position_deletes` writes one delete file per data file (the spec's
  ``file_path``/``pos`` columns with their reserved field ids, sorted), so that a delete
  file always names exactly one data file in its bounds;
- :class:`PublishFiles` is the snapshot producer of :meth:`catalog.lake.tables.Lake.commit`: a fast
  append of data files that also adds the delete files in a manifest of their own, and that
  drops the delete files whose data file an earlier step of the same transaction removed
  (a ``replace`` or a ``merge``), so that none is left pointing at nothing and the snapshot
  summary's ``total-records - total-position-deletes`` stays the number of visible rows.

It builds on pyiceberg's snapshot-producer internals; tests/test_deletes.py reads the
result back through pyiceberg and DuckDB, so a pyiceberg upgrade that moves them fails a
test rather than the lake.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyiceberg.conversions import from_bytes, to_bytes
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
    ManifestWriterV2,
)
from pyiceberg.table import Transaction
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _FastAppendFiles
from pyiceberg.typedef import Record
from pyiceberg.types import StringType

#: Reserved field ids of a position-delete file's columns (Iceberg spec, "Position Delete Files").
FILE_PATH_ID = 2147483546
POS_ID = 2147483545

SCHEMA = pa.schema(
    [
        pa.field("file_path", pa.string(), False, {"PARQUET:field_id": str(FILE_PATH_ID)}),
        pa.field("pos", pa.int64(), False, {"PARQUET:field_id": str(POS_ID)}),
    ]
)


def write_position_deletes(
    fs: pafs.FileSystem, path: str, data_file: str, positions: np.ndarray
) -> int:
    """Write the delete file at ``path`` (in ``fs``) for rows ``positions`` of ``data_file``.

    ``data_file`` is the path exactly as the table's manifest will hold it (readers match
    on the string).  Returns the file's size in bytes.
    """
    pos = np.unique(np.asarray(positions, np.int64))
    table = pa.table(
        [pa.array(np.full(len(pos), data_file, dtype=object), pa.string()), pa.array(pos)],
        schema=SCHEMA,
    )
    with fs.open_output_stream(path) as out:
        pq.write_table(table, out, compression="zstd")
    return int(fs.get_file_info(path).size)


def delete_data_file(path: str, rows: int, size: int, deletes: str, spec_id: int) -> DataFile:
    """The manifest entry's data file of a delete file written by :func:`write_position_deletes`
    (``rows`` positions of data file ``deletes``; the staged file's own facts, no read).

    Its bounds on ``file_path`` are the one data file it deletes from: readers prune with
    them, and :class:`PublishFiles` finds the delete files of a removed data file by them.
    """
    name = to_bytes(StringType(), deletes)
    return DataFile.from_args(
        content=DataFileContent.POSITION_DELETES,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=Record(),
        record_count=rows,
        file_size_in_bytes=size,
        column_sizes={},
        value_counts={FILE_PATH_ID: rows, POS_ID: rows},
        null_value_counts={FILE_PATH_ID: 0, POS_ID: 0},
        nan_value_counts={},
        lower_bounds={FILE_PATH_ID: name},
        upper_bounds={FILE_PATH_ID: name},
        split_offsets=None,
        sort_order_id=None,
        spec_id=spec_id,
        equality_ids=None,
        key_metadata=None,
    )


def deleted_from(data_file: DataFile) -> str | None:
    """The one data file a position-delete file deletes rows of, when its bounds say so."""
    lo = data_file.lower_bounds.get(FILE_PATH_ID) if data_file.lower_bounds else None
    hi = data_file.upper_bounds.get(FILE_PATH_ID) if data_file.upper_bounds else None
    if lo is None or lo != hi:
        return None
    return str(from_bytes(StringType(), lo))


class _DeleteManifestWriter(ManifestWriterV2):
    """A v2 manifest of delete files (pyiceberg 0.12 writes only data manifests)."""

    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


class PublishFiles(_FastAppendFiles):
    """Add data files and position-delete files in one snapshot (see the module's doc).

    Delete files are given with :meth:`append_data_file` like data files; their content
    type sends them to a delete manifest.  The snapshot is an ``append`` when it only adds
    data, an ``overwrite`` when delete files come or go (the spec's operations).
    """

    def __init__(self, transaction: Transaction, snapshot_properties: dict[str, str]) -> None:
        super().__init__(
            operation=Operation.APPEND,
            transaction=transaction,
            io=transaction._table.io,
            snapshot_properties=snapshot_properties,
        )
        self._committed_head = transaction._table.metadata.current_snapshot_id
        self._kept: list[ManifestFile] | None = None
        self._dropped: list[ManifestEntry] = []

    def _commit(self) -> Any:
        self._plan_dangling()
        if self._dropped or any(f.content != DataFileContent.DATA for f in self._added_data_files):
            self._operation = Operation.OVERWRITE
        return super()._commit()

    def _refresh_for_retry(self) -> None:
        super()._refresh_for_retry()
        self._committed_head = self._transaction._table.metadata.current_snapshot_id
        self._kept = None
        self._dropped = []
        self._deleted_data_files = set()

    # -- delete files whose data file is gone ------------------------------------------

    def _removed_in_transaction(self) -> set[str]:
        """Paths of the data files removed by the transaction's earlier steps."""
        meta = self._transaction.table_metadata
        removed: set[str] = set()
        snap_id = self._parent_snapshot_id
        while snap_id is not None and snap_id != self._committed_head:
            snap = meta.snapshot_by_id(snap_id)
            if snap is None:
                break
            for manifest in snap.manifests(io=self._io):
                if manifest.added_snapshot_id != snap_id or not manifest.deleted_files_count:
                    continue
                if manifest.content != ManifestContent.DATA:
                    continue
                for entry in manifest.fetch_manifest_entry(io=self._io, discard_deleted=False):
                    if entry.status == ManifestEntryStatus.DELETED and entry.snapshot_id == snap_id:
                        removed.add(entry.data_file.file_path)
            snap_id = snap.parent_snapshot_id
        return removed

    def _plan_dangling(self) -> None:
        """Split the parent's manifests into kept ones and delete entries to drop."""
        if self._kept is not None:
            return
        parent = (
            self._transaction.table_metadata.snapshot_by_id(self._parent_snapshot_id)
            if self._parent_snapshot_id is not None
            else None
        )
        kept: list[ManifestFile] = []
        self._dropped = []
        if parent is None:
            self._kept = kept
            return
        manifests = [
            m
            for m in parent.manifests(io=self._io)
            if m.has_added_files() or m.has_existing_files()
        ]
        has_deletes = any(m.content == ManifestContent.DELETES for m in manifests)
        removed = self._removed_in_transaction() if has_deletes else set()
        for manifest in manifests:
            if manifest.content != ManifestContent.DELETES or not removed:
                kept.append(manifest)
                continue
            entries = manifest.fetch_manifest_entry(io=self._io, discard_deleted=True)
            gone = [e for e in entries if deleted_from(e.data_file) in removed]
            if not gone:
                kept.append(manifest)
                continue
            stay = [e for e in entries if deleted_from(e.data_file) not in removed]
            if stay:
                rewritten = (_with_status(e, EXISTING, e.snapshot_id) for e in stay)
                kept.append(self._write_deletes(rewritten))
            for e in gone:
                self._dropped.append(_with_status(e, DELETED, self._snapshot_id))
                self._deleted_data_files.add(e.data_file)
        self._kept = kept

    # -- the snapshot's manifests ------------------------------------------------------

    def _existing_manifests(self) -> list[ManifestFile]:
        self._plan_dangling()
        assert self._kept is not None
        return list(self._kept)

    def _manifests(self) -> list[ManifestFile]:
        self._plan_dangling()
        out: list[ManifestFile] = []
        data = [f for f in self._added_data_files if f.content == DataFileContent.DATA]
        deletes = [f for f in self._added_data_files if f.content != DataFileContent.DATA]
        spec = self._transaction.table_metadata.spec()
        if data:
            with self.new_manifest_writer(spec=spec) as writer:
                for f in data:
                    writer.add(self._added(f))
            out.append(writer.to_manifest_file())
        if deletes or self._dropped:
            out.append(self._write_deletes([*(self._added(f) for f in deletes), *self._dropped]))
        return out + self._existing_manifests()

    def _added(self, data_file: DataFile) -> ManifestEntry:
        return ManifestEntry.from_args(
            status=ManifestEntryStatus.ADDED,
            snapshot_id=self._snapshot_id,
            sequence_number=None,
            file_sequence_number=None,
            data_file=data_file,
        )

    def _write_deletes(self, entries: Iterable[ManifestEntry]) -> ManifestFile:
        writer = _DeleteManifestWriter(
            spec=self._transaction.table_metadata.spec(),
            schema=self.schema(),
            output_file=self.new_manifest_output(),
            snapshot_id=self._snapshot_id,
            avro_compression=self._compression,
        )
        with writer:
            for entry in entries:
                writer.add_entry(entry)
        return writer.to_manifest_file()


EXISTING, DELETED = ManifestEntryStatus.EXISTING, ManifestEntryStatus.DELETED


def _with_status(
    entry: ManifestEntry, status: ManifestEntryStatus, snapshot_id: int | None
) -> ManifestEntry:
    return ManifestEntry.from_args(
        status=status,
        snapshot_id=snapshot_id,
        sequence_number=entry.sequence_number,
        file_sequence_number=entry.file_sequence_number,
        data_file=entry.data_file,
    )
