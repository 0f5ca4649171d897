"""SQL text for identifiers and scalar literals, the one quoting rule every layer uses.

Queries that blockhub writes itself (connectors' incremental reads, compiled quality
checks, the exchange's profile views, block summaries) quote names and values here;
user SQL is never assembled from strings (hub.exchange.sqlcheck parses it).
"""

from __future__ import annotations

import math

Scalar = str | int | float | bool | None


def quote_ident(name: str) -> str:
    """A double-quoted identifier (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: Scalar) -> str:
    """A literal: NULL, TRUE/FALSE, numbers bare (never quoted: a quoted number is a string
    that only compares by an implicit cast), anything else a single-quoted string."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return f"CAST('{value!r}' AS DOUBLE)"  # nan, inf: not numbers in SQL text
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"
