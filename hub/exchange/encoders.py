"""Streaming encoders of query results: JSON, NDJSON, CSV, Arrow IPC stream, Parquet.

Each turns a :class:`~hub.exchange.results.QueryResult` into an iterator of bytes that
holds at most one record batch in memory.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, Literal

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from hub.exchange.jsonrows import row_projection
from hub.exchange.results import QueryResult

Format = Literal["json", "ndjson", "csv", "arrow", "parquet"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
}
ROW_SEPARATORS: dict[str, str] = {"json": ",", "ndjson": "\n"}
"""Formats whose rows the exchange can render as JSON text inside the query."""
_OPTS = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_SERIALIZE_NUMPY


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=_OPTS)


def schema_json(schema: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


# JSON rows of a result the exchange did not render itself (a page replayed from a table,
# a type it could not render in the query) are rendered by DuckDB from each Arrow batch with
# the same expressions (hub.exchange.jsonrows), on a private in-memory database with no file access.
# Types without an expression there fall back to to_pylist + orjson.
_JSON_DB = duckdb.connect(config={"enable_external_access": "false"})
_JSON_DB.execute("SET TimeZone='UTC'")
_JSON_DB.execute("SET enable_progress_bar=false")
_JSON_DB.execute("SET lock_configuration=true")


def _string_bytes(arr: pa.Array) -> bytes | memoryview:
    """The concatenated values of a string array, straight from its data buffer (a view
    of Arrow's memory, not a copy: the answer's bytes are not copied on the way out)."""
    if arr.null_count:
        arr = arr.fill_null("")
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    if data is None:
        return b""
    return memoryview(data)[int(offsets[0]) : int(offsets[-1])]


def _rows_text(batches: Iterator[pa.RecordBatch], schema: pa.Schema, sep: str) -> Iterator[bytes]:
    """Each non-empty batch as its rows' JSON, every row followed by ``sep``."""
    con = _JSON_DB.cursor()
    projection: str | None = None
    python = False
    try:
        for batch in batches:
            if not batch.num_rows:
                continue
            if not python:
                rel = con.from_arrow(batch)
                if projection is None:
                    projection = row_projection(rel.columns, [str(t) for t in rel.types], sep)
                    python = projection is None
            if python or projection is None:
                yield b"".join(dumps(r) + sep.encode() for r in batch.to_pylist())
                continue
            column = rel.project(projection).to_arrow_table().column(0)
            yield b"".join(bytes(_string_bytes(chunk)) for chunk in column.chunks)
    finally:
        con.close()


def _result_rows(result: QueryResult, sep: str) -> Iterator[bytes | memoryview]:
    """The result's rows as JSON text: as rendered in the query when it was, else here."""
    if result.rendered == sep:
        for batch in result.batches():
            yield _string_bytes(batch.column(0))
    else:
        yield from _rows_text(result.batches(), result.schema, sep)


def encode_json(result: QueryResult) -> Iterator[bytes | memoryview]:
    yield b'{"ok":true,"columns":' + dumps(schema_json(result.schema)) + b',"rows":['
    first = True
    for body in _result_rows(result, ","):
        if not first:
            yield b","
        yield body[:-1]  # without the last row's separator
        first = False
    meta = dumps(result.meta())
    yield b"]," + meta[1:]


def encode_ndjson(result: QueryResult) -> Iterator[bytes | memoryview]:
    yield from _result_rows(result, "\n")


def encode_csv(result: QueryResult) -> Iterator[bytes]:
    header = True
    for batch in result.batches():
        buf = io.BytesIO()
        pacsv.write_csv(
            pa.Table.from_batches([batch]), buf, pacsv.WriteOptions(include_header=header)
        )
        header = False
        yield buf.getvalue()
    if header:  # no rows: still send the header line
        buf = io.BytesIO()
        pacsv.write_csv(result.schema.empty_table(), buf)
        yield buf.getvalue()


class _Sink(io.RawIOBase):
    """A write-only file that hands out what was written since the last drain."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._chunks.append(data)
        return len(data)

    def drain(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


def encode_arrow(result: QueryResult) -> Iterator[bytes]:
    sink = _Sink()
    with ipc.new_stream(sink, result.schema) as writer:
        yield sink.drain()
        for batch in result.batches():
            writer.write_batch(batch)
            yield sink.drain()
    yield sink.drain()


def encode_parquet(result: QueryResult) -> Iterator[bytes]:
    sink = _Sink()
    writer = pq.ParquetWriter(sink, result.schema, compression="zstd")
    for batch in result.batches():
        writer.write_batch(batch)
        chunk = sink.drain()
        if chunk:
            yield chunk
    writer.close()
    yield sink.drain()


ENCODERS: dict[str, Callable[[QueryResult], Iterator[bytes | memoryview]]] = {
    "json": encode_json,
    "ndjson": encode_ndjson,
    "csv": encode_csv,
    "arrow": encode_arrow,
    "parquet": encode_parquet,
}
