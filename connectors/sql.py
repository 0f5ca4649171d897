"""Shared SQL text helpers for connectors that build queries."""

from __future__ import annotations

from catalog.sqltext import quote_ident, quote_literal
from connectors.base import CursorValue

__all__ = ["incremental", "quote_ident", "quote_literal"]


def incremental(base: str, cursor: str | None, since: CursorValue) -> str:
    """Wrap a SELECT so that it returns only rows at or past the cursor.

    ``>=`` and not ``>``: rows carrying the watermark's own value may commit at the
    source after we read (docs/decisions.md D14); the ingest flow drops the ones
    it already has by key.
    """
    if cursor is None or since is None:
        return base
    return f"SELECT * FROM ({base}) AS _src WHERE {quote_ident(cursor)} >= {quote_literal(since)}"
