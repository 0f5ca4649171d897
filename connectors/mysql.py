"""MySQL / MariaDB source, read through DuckDB's mysql scanner into Arrow batches.

Same shape as the PostgreSQL connector: a full read of a table goes through the
scanner's ATTACH; an incremental read sends ``WHERE cursor >= ...`` to the server
as SQL (``mysql_query``) so that MySQL uses its index instead of shipping the
whole table to DuckDB.

MySQL's DATETIME has no time zone (and TIMESTAMP is shown in the session's zone),
so naive timestamps are wall-clock times: option ``time_zone`` (agencies in China
usually want ``Asia/Shanghai``) says which zone they are in; without it they are
read as they are (and taken as UTC by a ``timestamptz`` column).  With it, a
``timestamptz`` column holds the right instant, and the cursor sent back to the
server is converted to that zone again.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from catalog.errors import ConnectorError
from catalog.sqltext import quote_ident, quote_literal
from connectors.base import CursorValue
from connectors.postgres import PostgresConnector


def quote_mysql_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def quote_mysql_literal(value: CursorValue) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace("'", "''")
    return "'" + text + "'"


class MySQLConnector(PostgresConnector):
    """Options: ``dsn`` (``host=… port=… user=… password=… database=…``), ``table``
    (``table`` or ``database.table``) or ``query``, ``time_zone``."""

    name = "mysql"
    extension = "mysql"
    attach_type = "mysql"

    def __init__(self, options: dict[str, object], *, batch_rows: int = 100_000) -> None:
        super().__init__(options, batch_rows=batch_rows)
        tz_name = str(self.option("time_zone", "UTC"))
        self.localize = "time_zone" in self.options
        try:
            self.zone = zoneinfo.ZoneInfo(tz_name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConnectorError(
                f"connector 'mysql': unknown time_zone {tz_name!r} (use an IANA name such as "
                "Asia/Shanghai)",
                connector=self.name,
                option="time_zone",
            ) from None
        self.tz_name = tz_name

    def _attach_dsn(self) -> str:
        # The time limits of the PostgreSQL connector are libpq options; not here.
        return self.dsn

    def _table_ref(self) -> str:
        assert self.table
        return ".".join(quote_mysql_ident(p) for p in self.table.split("."))

    def _server_literal(self, since: CursorValue) -> str:
        """A cursor value as MySQL understands it: ISO times become local wall-clock text."""
        if isinstance(since, str):
            try:
                moment = dt.datetime.fromisoformat(since)
            except ValueError:
                return quote_mysql_literal(since)
            if moment.tzinfo is not None:
                moment = moment.astimezone(self.zone).replace(tzinfo=None)
            return quote_mysql_literal(moment.isoformat(sep=" "))
        return quote_mysql_literal(since)

    def _server_sql(self, cursor: str | None, since: CursorValue) -> str:
        base = self.query or f"SELECT * FROM {self._table_ref()}"
        if cursor is None or since is None:
            return base
        return (
            f"SELECT * FROM ({base}) AS _src "
            f"WHERE {quote_mysql_ident(cursor)} >= {self._server_literal(since)}"
        )

    def _duck_sql(self, cursor: str | None, since: CursorValue) -> str:
        if self.table and (cursor is None or since is None):
            parts = self.table.split(".")
            ref = ".".join(quote_ident(p) for p in parts)
            return f"SELECT * FROM src.{ref}"
        sql = quote_literal(self._server_sql(cursor, since))
        return f"SELECT * FROM mysql_query('src', {sql})"

    def _describe_sql(self) -> str:
        return self._duck_sql(None, None)

    def discover(self) -> pa.Schema:
        schema = super().discover()
        return _zoned_schema(schema, self.tz_name) if self.localize else schema

    def read(
        self, cursor: str | None = None, since: CursorValue = None
    ) -> Iterator[pa.RecordBatch]:
        for batch in super().read(cursor, since):
            yield _localize(batch, self.tz_name) if self.localize else batch


def _zoned_schema(schema: pa.Schema, tz: str) -> pa.Schema:
    fields = [
        f.with_type(pa.timestamp("us", tz="UTC"))
        if pa.types.is_timestamp(f.type) and f.type.tz is None
        else f
        for f in schema
    ]
    return pa.schema(fields)


def _localize(batch: pa.RecordBatch, tz: str) -> pa.RecordBatch:
    """Naive timestamps are wall-clock times in ``tz``: make them instants (UTC)."""
    if not any(pa.types.is_timestamp(t) and t.tz is None for t in batch.schema.types):
        return batch
    cols = []
    for col, f in zip(batch.columns, batch.schema, strict=True):
        if pa.types.is_timestamp(f.type) and f.type.tz is None:
            zoned = pc.assume_timezone(col, tz, ambiguous="earliest", nonexistent="earliest")
            col = zoned.cast(pa.timestamp("us", tz="UTC"))
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, schema=_zoned_schema(batch.schema, tz))
