"""A running query's answer: its schema, its stream of Arrow batches and what it read, and
the two things every answer's edge needs — an error message that quotes no value, and the
fingerprint the audit log keeps instead of the SQL text."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from catalog.errors import QueryFailed, QueryTimeout

log = logging.getLogger(__name__)

CloseHook = Callable[["QueryResult", str], None]


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
    extra: dict[str, Any] = field(default_factory=dict)
    on_close: CloseHook | None = field(default=None, repr=False)
    outcome: str = "ok"
    complete: bool = False
    """Every batch has been read from the engine already (a small answer)."""
    rendered: str | None = None
    """When set, each batch is one string column of JSON rows, each followed by this
    separator (``Exchange.query(render_json=...)``); ``schema`` is still the data's."""
    defer_close_hook: bool = False
    """Leave the close hook (the audit entry) to :meth:`run_close_hook`, called by the
    server once the answer's bytes are handed over (``hub.api.common.answer``)."""
    release: Callable[[], None] | None = field(default=None, repr=False)
    """Hands the room and its objects back once the cursor is closed."""

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
            self.outcome = "timeout"
            raise QueryTimeout("query ran past its time limit and was stopped") from None
        except duckdb.Error as e:
            self.outcome = "failed"
            raise QueryFailed(clean_error(e)) from None
        finally:
            self.close()

    def to_table(self) -> pa.Table:
        if self.rendered is not None:
            raise TypeError("this result holds rendered JSON rows: iterate batches()")
        return pa.Table.from_batches(list(self.batches()), schema=self.schema)

    def close(self) -> None:
        if self.finished is None:
            self.finished = time.perf_counter()
            self._timer.cancel()
            self._cursor.close()
            if self.release is not None:
                release, self.release = self.release, None
                release()
            if not self.defer_close_hook:
                self.run_close_hook()

    def run_close_hook(self) -> None:
        """Run the close hook once (after :meth:`close`)."""
        if self.on_close is not None:
            hook, self.on_close = self.on_close, None
            try:
                hook(self, self.outcome)
            except Exception:  # the answer is out; a failed audit write must be seen
                log.exception("could not append the audit entry of a query")

    def meta(self) -> dict[str, Any]:
        return {
            "row_count": self.row_count,
            "truncated": self.truncated,
            "query_ms": self.query_ms,
            "versions": self.versions,
            "classification": self.classification,
            **self.extra,
        }


_QUOTED = re.compile(r"'(?:[^']|'')*'")


def clean_error(e: BaseException) -> str:
    """DuckDB's message without the values it quotes (a conversion error names the value
    it failed on; it could belong to a row a filter keeps from the caller)."""
    text = str(e)
    first = text.splitlines()[0] if text else type(e).__name__
    return _QUOTED.sub("'…'", first)


def fingerprint(sql: str) -> str:
    """SHA-256 of the query with whitespace collapsed (the audit log keeps this, not the text)."""
    return hashlib.sha256(" ".join(sql.split()).encode()).hexdigest()
