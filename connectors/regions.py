"""The GB/T 2260 region table shipped with blockhub, as a source like any other.

Publishing it through the ordinary ingest flow makes the region dimension a versioned lake
table (``regions`` in the sample world) that every agency can join in SQL, with its
source and date in ``catalog/domain/data/README.md``.  No options; use ``mode: replace``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from catalog.domain.regions import region_codes_table
from connectors.base import Connector, CursorValue


class RegionsConnector(Connector):
    name = "gbt2260"

    def discover(self) -> pa.Schema:
        return region_codes_table().schema

    def read(
        self, cursor: str | None = None, since: CursorValue = None
    ) -> Iterator[pa.RecordBatch]:
        yield from region_codes_table().to_batches(self.batch_rows)
