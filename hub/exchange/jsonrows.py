"""JSON text of result rows, rendered by DuckDB.

A JSON answer's rows are made by DuckDB itself: ``to_json(struct_pack(...))`` over the
result, one VARCHAR per row followed by a separator.  Inside the query (the exchange's
``render_json``) this costs no second bind and runs on DuckDB's threads with the scan;
over an Arrow batch (:mod:`hub.exchange.encoders`, for results made elsewhere) it is one extra
relation per batch.  The two share these expressions, so a value reads the same either way:

- integers, booleans, strings, dates: as JSON has them;
- floating point: NaN and ±inf are not JSON, they become ``null``;
- decimals: a string (no precision lost);
- timestamps: ISO 8601 with microseconds, ``+00:00`` appended for time-zone-aware ones
  (the engine's session time zone is UTC).

Any other type (lists, structs, blobs, intervals …) has no expression here: callers fall
back to Python (``to_pylist`` + orjson).
"""

from __future__ import annotations

from collections.abc import Sequence

from catalog.sqltext import quote_ident, quote_literal

_PLAIN = frozenset(
    {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "BOOLEAN",
        "VARCHAR",
        "DATE",
    }
)
_FLOATS = frozenset({"FLOAT", "DOUBLE"})


def value_expr(name: str, duck_type: str) -> str | None:
    """DuckDB expression giving the JSON value of a column of ``duck_type``, or None."""
    q = quote_ident(name)
    t = duck_type.upper()
    if t in _PLAIN:
        return q
    if t in _FLOATS:
        return f"CASE WHEN isfinite({q}) THEN {q} END"
    if t.startswith("DECIMAL"):
        return f"CAST({q} AS VARCHAR)"
    if t in ("TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"):
        return f"strftime(CAST({q} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%f')"
    if t == "TIMESTAMP WITH TIME ZONE":
        return f"strftime({q}, '%Y-%m-%dT%H:%M:%S.%f') || '+00:00'"
    return None


def row_projection(names: Sequence[str], duck_types: Sequence[str], sep: str) -> str | None:
    """The SELECT list rendering each row as JSON text followed by ``sep`` (one column,
    ``json``), or None when a column's type or a duplicate name needs the Python path."""
    if not names or len(set(names)) != len(names):
        return None
    parts = []
    for name, duck_type in zip(names, duck_types, strict=True):
        expr = value_expr(name, duck_type)
        if expr is None:
            return None
        parts.append(f"{quote_ident(name)} := {expr}")
    literal = quote_literal(sep)
    return f"CAST(to_json(struct_pack({', '.join(parts)})) AS VARCHAR) || {literal} AS json"
