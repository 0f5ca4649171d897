"""The cursor of an incremental read, as a value (after dlt's ``extract/incremental``).

A run reads past the watermark the lake's current snapshot holds (``start_value``) and
watches the cursor column of every batch it stages; the highest value seen
(``last_value``) is committed with the data (docs/decisions.md D14) and is where the next
run starts.  ``start_value`` is None for a first run, a ``replace`` source or a source
without a cursor column: then everything is read and ``last_value`` starts empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import CursorValue, cursor_value


def greater(a: CursorValue, b: CursorValue) -> bool:
    """Cursor order: numbers as numbers, anything else (ISO dates, text) as text."""
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a > b
    return str(a) > str(b)


@dataclass
class Incremental:
    """One run's cursor: where it starts, the highest value it has staged, its rows."""

    cursor_path: str | None
    """The cursor column (None: the source has none; nothing is tracked)."""
    start_value: CursorValue = None
    """The committed watermark the read starts at (``cursor >= start_value``)."""
    last_value: CursorValue = field(default=None)
    """The highest cursor value among the rows staged so far."""
    rows: int = 0
    """Rows staged so far."""

    def __post_init__(self) -> None:
        if self.last_value is None:
            self.last_value = self.start_value

    def observe(self, batch: pa.RecordBatch) -> None:
        """Count a staged batch and move ``last_value`` up to its highest cursor value."""
        self.rows += batch.num_rows
        if self.cursor_path is None:
            return
        top = pc.max(batch.column(batch.schema.get_field_index(self.cursor_path))).as_py()
        if top is None:
            return
        value = cursor_value(top)
        if self.last_value is None or greater(value, self.last_value):
            self.last_value = value
