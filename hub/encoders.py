"""Streaming encoders of query results: JSON, NDJSON, CSV, Arrow IPC stream, Parquet.

Each turns a :class:`~hub.exchange.QueryResult` into an iterator of bytes that
holds at most one record batch in memory.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from hub.exchange import QueryResult

Format = Literal["json", "ndjson", "csv", "arrow", "parquet"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
}
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


def encode_json(result: QueryResult) -> Iterator[bytes]:
    yield b'{"ok":true,"columns":' + dumps(schema_json(result.schema)) + b',"rows":['
    first = True
    for batch in result.batches():
        rows = batch.to_pylist()
        if not rows:
            continue
        body = dumps(rows)[1:-1]
        yield body if first else b"," + body
        first = False
    meta = dumps(result.meta())
    yield b"]," + meta[1:]


def encode_ndjson(result: QueryResult) -> Iterator[bytes]:
    for batch in result.batches():
        rows = batch.to_pylist()
        if rows:
            yield b"\n".join(dumps(r) for r in rows) + b"\n"


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


ENCODERS: dict[str, Callable[[QueryResult], Iterator[bytes]]] = {
    "json": encode_json,
    "ndjson": encode_ndjson,
    "csv": encode_csv,
    "arrow": encode_arrow,
    "parquet": encode_parquet,
}
