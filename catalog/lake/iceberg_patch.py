"""One measured fix to pyiceberg 0.12, applied when the lake module is imported.

``Transaction.table_metadata`` applies the transaction's updates to the table's metadata
and returns a *deep copy* of the result on every access, and one ``add_files`` reads it
~17 times.  The copy grows with the table's history (every snapshot, manifest list and
log entry): on a table of a few snapshots it was 35–40 ms of a 240 ms incremental run
(bench/ingest.py, docs/decisions.md D28), and it would be seconds per commit for a dataset
with thousands of runs.  The result depends only on the table's metadata object and the
tuple of updates (both replaced, never changed in place, and the metadata models are
frozen), so it is kept per transaction until either changes.

Only pyiceberg 0.12.0 (the pinned version) is patched; tests/test_lake.py checks that the
kept metadata equals what a fresh computation gives, so an upgrade that changes the
internals fails a test instead of misbehaving.
"""

from __future__ import annotations

from typing import Any

import pyiceberg
from pyiceberg.table import Transaction

PATCHED_VERSION = "0.12.0"
_original: Any = Transaction.table_metadata


def _kept_metadata(self: Transaction) -> Any:
    base, updates = self._table.metadata, self._updates
    kept = self.__dict__.get("_blockhub_metadata")
    if kept is not None and kept[0] is base and kept[1] is updates:
        return kept[2]
    metadata = _original.fget(self)
    self.__dict__["_blockhub_metadata"] = (base, updates, metadata)
    return metadata


def fresh_metadata(tx: Transaction) -> Any:
    """What pyiceberg itself computes for ``tx`` (for the test)."""
    return _original.fget(tx)


def apply() -> bool:
    """Patch once, and only the version it was measured on; True when patched."""
    if pyiceberg.__version__ != PATCHED_VERSION or not isinstance(_original, property):
        return False
    if Transaction.table_metadata is _original:
        Transaction.table_metadata = property(_kept_metadata)  # type: ignore[method-assign, assignment]
    return True


apply()
