"""File sources (CSV, Parquet, JSON/NDJSON) read by DuckDB into Arrow batches.

``path`` is a file or a glob.  With a cursor column only rows past the cursor are
returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import duckdb
import pyarrow as pa

from catalog.errors import ConnectorError
from connectors.base import Connector, CursorValue
from connectors.duck import connect
from connectors.sql import incremental, quote_literal


class FileConnector(Connector):
    name = "file"
    reader: ClassVar[str] = ""

    def _relation_sql(self) -> str:
        path = str(self.option("path", required=True))
        return f"SELECT * FROM {self.reader}({quote_literal(path)}{self._reader_options()})"

    def _reader_options(self) -> str:
        return ""

    def _run(self, sql: str) -> duckdb.DuckDBPyConnection:
        con = connect()
        try:
            return con.execute(sql)
        except duckdb.Error as e:
            con.close()
            first = str(e).splitlines()[0]
            raise ConnectorError(
                f"{self.name} source {self.option('path')}: {first}",
                connector=self.name,
                path=str(self.option("path")),
            ) from None

    def discover(self) -> pa.Schema:
        return self._run(f"SELECT * FROM ({self._relation_sql()}) LIMIT 0").arrow().schema

    def read(
        self, cursor: str | None = None, since: CursorValue = None
    ) -> Iterator[pa.RecordBatch]:
        path = str(self.option("path", required=True))
        if not any(ch in path for ch in "*?[") and not Path(path).exists():
            raise ConnectorError(f"{self.name} source {path}: file not found", connector=self.name)
        res = self._run(incremental(self._relation_sql(), cursor, since))
        yield from res.fetch_record_batch(self.batch_rows)


class CsvConnector(FileConnector):
    """CSV with a header row; options ``delimiter`` and ``encoding`` pass to DuckDB."""

    name = "csv"
    reader = "read_csv"

    def _reader_options(self) -> str:
        opts = [", header=true"]
        for key in ("delimiter", "encoding", "nullstr"):
            if key in self.options:
                opts.append(f", {key}={quote_literal(str(self.options[key]))}")
        return "".join(opts)


class ParquetConnector(FileConnector):
    name = "parquet"
    reader = "read_parquet"


class JsonConnector(FileConnector):
    """JSON arrays or newline-delimited JSON."""

    name = "json"
    reader = "read_json_auto"
