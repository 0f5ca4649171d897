"""Shared SQL text helpers for connectors that build queries."""

from __future__ import annotations

from connectors.base import CursorValue


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: CursorValue) -> str:
    """A SQL literal for a cursor value (numbers bare, everything else quoted)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def incremental(base: str, cursor: str | None, since: CursorValue) -> str:
    """Wrap a SELECT so that it returns only rows at or past the cursor.

    ``>=`` and not ``>``: rows carrying the watermark's own value may commit at the
    source after we read (docs/decisions.md D14); the ingest flow drops the ones
    it already has by key.
    """
    if cursor is None or since is None:
        return base
    return f"SELECT * FROM ({base}) AS _src WHERE {quote_ident(cursor)} >= {quote_literal(since)}"
