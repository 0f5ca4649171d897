"""The block-key step of ingest: resolve address keys, note which regions got rows.

It runs on every conformed batch between reading and staging (``extract``), and is
additive: a dataset without block keys passes through untouched.

- An ``address`` block key gets a derived lake column ``<column>_region_code`` holding the
  GB/T 2260 code the address resolves to (:func:`catalog.domain.addresses.resolve_address`), or
  null.  Non-empty addresses that do not resolve are counted per column and reported in
  the run; they are never guessed.
- For every region-like key (region codes and resolved addresses) the step counts the
  increment's rows per region code.  ``dataset.updated`` carries those counts, so that
  websocket subscribers of ``block:<code>`` hear of updates that fall in their block.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from catalog.datasets.manifest import Manifest
from catalog.domain.addresses import resolve_address
from catalog.domain.regions import normalize_code

MAX_REGIONS_IN_EVENT = 500
"""Beyond this many distinct codes an increment's counts are rolled up (township → county
→ city → province) so that an event stays small."""


class BlockKeyStep:
    """Per-run state of the step: derived columns, unresolved counts, regions touched."""

    def __init__(self, manifest: Manifest) -> None:
        self.addresses = [b for b in manifest.block_keys if b.kind == "address"]
        self.region_columns = [b.key_column for b in manifest.block_keys if b.region_like]
        self.unresolved: Counter[str] = Counter()
        self.regions: Counter[str] = Counter()

    def schema(self, schema: pa.Schema) -> pa.Schema:
        """The lake schema: the source's, plus one derived code column per address key."""
        for key in self.addresses:
            if key.key_column not in schema.names:
                schema = schema.append(pa.field(key.key_column, pa.string()))
        return schema

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        for key in self.addresses:
            text = batch.column(batch.schema.get_field_index(key.column)).cast(pa.string())
            codes = self._resolve(text)
            trimmed = pc.utf8_trim_whitespace(text)
            given = pc.and_(pc.is_valid(trimmed), pc.not_equal(trimmed, ""))
            missed = pc.sum(pc.and_(given, pc.is_null(codes))).as_py() or 0
            if missed:
                self.unresolved[key.column] += missed
            batch = batch.append_column(pa.field(key.key_column, pa.string()), codes)
        for column in self.region_columns:
            counts = pc.value_counts(batch.column(batch.schema.get_field_index(column)))
            for item in counts.to_pylist():
                code = normalize_code(item["values"]) if item["values"] else None
                if code is not None:
                    self.regions[code] += item["counts"]
        return batch

    @staticmethod
    def _resolve(text: pa.Array) -> pa.Array:
        """Resolve each distinct address once; rows take their code from the dictionary."""
        encoded = pc.dictionary_encode(text)
        assert isinstance(encoded, pa.DictionaryArray)
        resolved = pa.array(
            [resolve_address(a) if a else None for a in encoded.dictionary.to_pylist()],
            pa.string(),
        )
        return pc.take(resolved, encoded.indices)

    def touched(self) -> dict[str, int]:
        """Rows of the increment per region code, rolled up when there are too many."""
        return rollup(dict(self.regions), MAX_REGIONS_IN_EVENT)


def rollup(counts: dict[str, int], limit: int) -> dict[str, int]:
    """Merge codes into their ancestors' prefixes until at most ``limit`` remain.

    Widths step 12 → 6 → 4 → 2 digits; a rolled-up code is padded back to 6 digits
    (``5201`` → ``520100``), which names the same city or province.
    """
    for width in (6, 4, 2):
        if len(counts) <= limit:
            break
        merged: Counter[str] = Counter()
        for code, n in counts.items():
            merged[code[:width].ljust(6, "0")] += n
        counts = dict(merged)
    return counts
