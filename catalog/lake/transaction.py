"""The lake's Iceberg transaction: pyiceberg's own, with its table metadata kept.

``Transaction.table_metadata`` in pyiceberg 0.12 applies the transaction's updates to the
table's metadata and returns a *deep copy* of the result on every access, and one
``add_files`` reads it ~17 times.  The copy grows with the table's history (every
snapshot, manifest list and log entry): on a table of a few snapshots it was 35–40 ms of a
240 ms incremental run (bench/ingest.py, docs/decisions.md D28), and it would be seconds
per commit for a dataset with thousands of runs.  The result depends only on the table's
metadata object and the tuple of updates (both replaced, never changed in place, and the
metadata models are frozen), so it is kept per transaction until either changes.

A subclass the lake opens its commits with (:func:`transaction`), not a patch of
pyiceberg's class: nothing else in the process changes behaviour.  It relies on
``table_metadata`` being a property over ``_table.metadata`` and ``_updates``;
tests/test_lake_transaction.py checks that at the pinned version and that the kept
metadata equals a fresh computation at every step, so an upgrade that changes the
internals fails a test instead of misbehaving.
"""

from __future__ import annotations

from typing import Any

from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata

#: The pyiceberg version the kept metadata was measured and checked on (constraints.txt).
CHECKED_VERSION = "0.12.0"

_computed: Any = Transaction.table_metadata  # pyiceberg's property, read by the subclass


class KeptMetadataTransaction(Transaction):
    """A transaction whose ``table_metadata`` is computed once per change, not per read."""

    _kept: tuple[Any, Any, TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        kept = self._kept
        if kept is not None and kept[0] is base and kept[1] is updates:
            return kept[2]
        metadata: TableMetadata = _computed.fget(self)
        self._kept = (base, updates, metadata)
        return metadata


def transaction(table: Table) -> KeptMetadataTransaction:
    """What ``table.transaction()`` gives, with the metadata kept (use as a context)."""
    return KeptMetadataTransaction(table)


def fresh_metadata(tx: Transaction) -> TableMetadata:
    """What pyiceberg itself computes for ``tx`` (for the test)."""
    metadata: TableMetadata = _computed.fget(tx)
    return metadata
