"""PostgreSQL source, read through DuckDB's postgres scanner into Arrow batches.

A full read of a table uses the scanner's parallel binary COPY; an incremental
read sends its ``WHERE cursor > ...`` to the server as SQL (``postgres_query``)
so that PostgreSQL can use its index: DuckDB's ATTACH scan would not push the
filter down and would read the whole table (measured, see docs/decisions.md).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future

import duckdb
import pyarrow as pa

from catalog.errors import ConnectorError
from connectors.base import Connector, CursorValue
from connectors.duck import connect, stream
from connectors.sql import incremental, quote_ident, quote_literal

# A server stream (a query, an incremental read) comes in batches this small: the lake
# encodes each row group while the next is still being read, so a small increment costs
# its read plus the encoding of its last group (catalog.lake.tables.row_groups gathers the
# batches into row groups again).  The full table's parallel scan keeps ``batch_rows``.
STREAM_BATCH_ROWS = 16_384

_PASSWORD = re.compile(r"(password\s*=\s*)(\S+)|(://[^:/@]+:)([^@]+)(@)", re.IGNORECASE)


def redact(dsn: str) -> str:
    """The DSN with any password replaced, for messages and logs."""
    return _PASSWORD.sub(lambda m: (m.group(1) or m.group(3)) + "***" + (m.group(5) or ""), dsn)


class PostgresConnector(Connector):
    """Options: ``dsn`` (libpq string or URL), and ``table`` (``schema.table``) or ``query``;
    ``connect_timeout_s`` and ``statement_timeout_s`` bound a slow source."""

    name = "postgres"
    extension = "postgres"
    attach_type = "postgres"

    def __init__(self, options: dict[str, object], *, batch_rows: int = 100_000) -> None:
        super().__init__(options, batch_rows=batch_rows)
        self.dsn: str = str(self.option("dsn", required=True))
        self.table: str | None = self.option("table")
        self.query: str | None = self.option("query")
        if bool(self.table) == bool(self.query):
            raise ConnectorError(
                f"connector {self.name!r} needs exactly one of options 'table' or 'query'",
                connector=self.name,
            )
        self._con: duckdb.DuckDBPyConnection | None = None
        self._opening: Future[duckdb.DuckDBPyConnection] | None = None

    def prepare(self) -> None:
        """Load the scanner extension and ATTACH the source in a thread (~50 ms: loading
        the 41 MB extension, the server's connection handshake) while the run reads the
        lake's state; DuckDB releases the GIL meanwhile."""
        if self._con is not None or self._opening is not None:
            return
        opening: Future[duckdb.DuckDBPyConnection] = Future()

        def run() -> None:
            try:
                opening.set_result(self._open())
            except BaseException as e:  # handed to the first _connect
                opening.set_exception(e)

        self._opening = opening
        threading.Thread(target=run, name=f"blockhub-{self.name}-connect", daemon=True).start()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            opening, self._opening = self._opening, None
            self._con = opening.result() if opening is not None else self._open()
        return self._con

    def _open(self) -> duckdb.DuckDBPyConnection:
        try:
            con = connect(self.extension, skip_signature_check=True)
            con.execute(
                f"ATTACH {quote_literal(self._attach_dsn())} AS src "
                f"(TYPE {self.attach_type}, READ_ONLY)"
            )
        except duckdb.Error as e:
            raise self._error("cannot connect", e) from None
        return con

    def _attach_dsn(self) -> str:
        """The DSN with the connect and statement time limits of the options added."""
        extra: list[str] = []
        connect_s = self.option("connect_timeout_s")
        if connect_s is not None:
            extra.append(f"connect_timeout={max(1, int(connect_s))}")
        statement_s = self.option("statement_timeout_s")
        if statement_s is not None:
            ms = int(float(statement_s) * 1000)
            extra.append(f"options='-c statement_timeout={ms}'")
        if not extra:
            return self.dsn
        if "://" in self.dsn:
            query = "&".join(e.replace("'", "").replace(" ", "%20") for e in extra)
            return self.dsn + ("&" if "?" in self.dsn else "?") + query
        return " ".join([self.dsn, *extra])

    def _error(self, what: str, e: Exception) -> ConnectorError:
        msg = redact(str(e).splitlines()[0] if str(e) else type(e).__name__)
        return ConnectorError(
            f"{self.name} source {redact(self.dsn)}: {what}: {msg}", connector=self.name
        )

    def _table_ref(self) -> str:
        assert self.table
        parts = self.table.split(".")
        return ".".join(quote_ident(p) for p in parts)

    def _server_sql(self, cursor: str | None, since: CursorValue) -> str:
        base = self.query or f"SELECT * FROM {self._table_ref()}"
        return incremental(base, cursor, since)

    def _duck_sql(self, cursor: str | None, since: CursorValue) -> str:
        if self.table and (cursor is None or since is None):
            schema_table = self.table if "." in self.table else f"public.{self.table}"
            schema, table = schema_table.split(".", 1)
            return f"SELECT * FROM src.{quote_ident(schema)}.{quote_ident(table)}"
        return (
            f"SELECT * FROM postgres_query('src', {quote_literal(self._server_sql(cursor, since))})"
        )

    def _describe_sql(self) -> str:
        """What ``discover`` describes: the source query as the server prepares it.  A
        prepared statement's row description costs one round trip (~3 ms); describing the
        ATTACHed table first loads the schema's catalog (15 ms warm, ~90 ms cold), which
        only the full parallel scan needs.  Both map types through the same code."""
        return f"SELECT * FROM postgres_query('src', {quote_literal(self._server_sql(None, None))})"

    def discover(self) -> pa.Schema:
        con = self._connect()
        try:
            return con.execute(f"SELECT * FROM ({self._describe_sql()}) LIMIT 0").arrow().schema
        except duckdb.Error as e:
            raise self._error("cannot read schema", e) from None

    def _parallel(self, cursor: str | None, since: CursorValue) -> bool:
        """Whether the read is the ATTACHed table's parallel scan (else one server stream)."""
        return bool(self.table) and (cursor is None or since is None)

    def read(
        self, cursor: str | None = None, since: CursorValue = None
    ) -> Iterator[pa.RecordBatch]:
        con = self._connect()
        parallel = self._parallel(cursor, since)
        # A query is one stream from the server, and with several DuckDB threads an error
        # the server sends midway (division by zero, a cancelled statement) sometimes
        # reaches the reader only as "Interrupted!": the failing task interrupts the others
        # and the fetch sees the interruption first.  One thread costs a query read little
        # (the stream is serial) and keeps the server's reason.
        con.execute("RESET threads" if parallel else "SET threads = 1")
        rows = self.batch_rows if parallel else min(self.batch_rows, STREAM_BATCH_ROWS)
        try:
            yield from stream(con, self._duck_sql(cursor, since), rows)
        except duckdb.InterruptException:
            raise ConnectorError(
                f"{self.name} source {redact(self.dsn)}: read failed: a parallel scan task "
                "failed and DuckDB reported only the interruption of the others; the run "
                "can be retried",
                connector=self.name,
            ) from None
        except duckdb.Error as e:
            raise self._error("read failed", e) from None

    def close(self) -> None:
        if self._opening is not None:  # prepared, never used: wait for it, then close it
            opening, self._opening = self._opening, None
            if opening.exception() is None:
                self._con = opening.result()
        if self._con is not None:
            self._con.close()
            self._con = None
