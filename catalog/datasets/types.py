"""The closed vocabulary of column types a manifest may declare, and their Arrow form."""

from __future__ import annotations

import re

import pyarrow as pa

SIMPLE_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    # Iceberg stores microseconds; a naive timestamp is wall-clock time without a zone.
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "binary": pa.binary(),
}

_DECIMAL = re.compile(r"^decimal\((\d{1,2}),\s*(\d{1,2})\)$")

ALLOWED_TYPES_TEXT = ", ".join([*SIMPLE_TYPES, "decimal(P,S)"])


def parse_type(text: str) -> pa.DataType:
    """Arrow type of a manifest type name; ValueError names what is allowed."""
    name = text.strip().lower()
    if name in SIMPLE_TYPES:
        return SIMPLE_TYPES[name]
    m = _DECIMAL.match(name)
    if m:
        precision, scale = int(m.group(1)), int(m.group(2))
        if 1 <= precision <= 38 and scale <= precision:
            return pa.decimal128(precision, scale)
    raise ValueError(f"unknown type {text!r}; allowed: {ALLOWED_TYPES_TEXT}")
