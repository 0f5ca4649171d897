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
    """A literal: NULL, TRUE/FALSE, finite numbers bare, anything else (NaN and the infinities
    included) a single-quoted string."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and not math.isfinite(value):
        # SQL has no bare literal for NaN or an infinity: the string ('nan', 'inf', '-inf')
        # that every engine casts to the column's floating type.
        return f"'{value!r}'"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"
