"""PIPL masks as DuckDB SQL expressions, agreeing with the Python masks.

The exchange applies masks inside the engine (the reader only ever sees the masked
expression, so ``WHERE``/``ORDER BY``/``GROUP BY`` and functions work on masked values).
:func:`mask_value` is the Python reference for every kind; ``catalog.domain.identifiers`` holds
the phone, ID-number and name masks it reuses.  ``tests/test_masking.py`` runs the SQL
and the Python side over the same values and requires identical output.

Kinds (manifest ``pii``):

- ``phone``: normalised (``catalog.domain.identifiers.normalize_phone``: full-width digits,
  spaces, dashes, ``+86``), then first 3 and last 4 stay (``138****5678``) — under 11
  characters, starred whole;
- ``id_number``: normalised (``normalize_identifier``), then first 6 and last 4 stay
  (``520102********1234``) — under 18 characters, starred whole;
- ``name``: the first character stays (``张**``); a 1-character name is starred;
- ``address``: the first 6 characters stay (province/city/district, mostly);
- ``email``: the first character of a local part of 2 or more characters and the domain
  stay (``z***@gov.cn``); a 1-character local part is not shown (``***@b.cn``);
- ``plate``: the first 2 characters (province + authority letter) and the last stay, with
  at least 4 hidden (``贵A****5``) — shorter plates are starred whole;
- ``other``: the whole value is replaced by ``***``.

A value too short for its mask is starred whole; NULL stays NULL.  Lengths count
Unicode code points on both sides.  The SQL is generated from the same constants as the
Python (the fold table, the prefix pattern, the keep/hide counts), and
``tests/test_masking.py`` checks both on generated values.
"""

from __future__ import annotations

from collections.abc import Callable

from catalog.domain.identifiers import (
    FOLD_FROM,
    FOLD_TO,
    ID_NUMBER_KEEP,
    PHONE_KEEP,
    PHONE_PREFIX_RE,
    _mask_middle,
    mask_id_number,
    mask_name,
    mask_phone,
)
from catalog.sqltext import quote_literal

PLATE_KEEP = (2, 1, 4)
"""Plate: first 2 and the last stay, at least 4 hidden (``贵A****5``)."""


def _mask_address(s: str) -> str:
    return s[:6] + "*" * (len(s) - 6) if len(s) > 6 else "*" * len(s)


def _mask_email(s: str) -> str:
    local, at, domain = s.partition("@")
    if not at or not local:
        return "*" * len(s)
    return (local[:1] if len(local) > 1 else "") + "***@" + domain


def _mask_plate(s: str) -> str:
    return _mask_middle(s, *PLATE_KEEP)


def _mask_other(_: str) -> str:
    return "***"


PY_MASKS: dict[str, Callable[[str], str]] = {
    "phone": mask_phone,
    "id_number": mask_id_number,
    "name": mask_name,
    "address": _mask_address,
    "email": _mask_email,
    "plate": _mask_plate,
    "other": _mask_other,
}


def mask_value(kind: str, value: str | None) -> str | None:
    """The masked form of ``value`` for a personal-data kind (Python reference)."""
    if value is None:
        return None
    return PY_MASKS.get(kind, _mask_other)(value)


def normalize_sql(x: str) -> str:
    """``catalog.domain.identifiers.normalize_identifier`` in DuckDB SQL."""
    return f"translate({x}, {quote_literal(FOLD_FROM)}, {quote_literal(FOLD_TO)})"


def normalize_phone_sql(x: str) -> str:
    """``catalog.domain.identifiers.normalize_phone`` in DuckDB SQL."""
    return f"regexp_replace({normalize_sql(x)}, {quote_literal(PHONE_PREFIX_RE)}, '\\2')"


def _middle_sql(x: str, head: int, tail: int, min_hidden: int = 1) -> str:
    return (
        f"CASE WHEN length({x}) - {head + tail} < {max(min_hidden, 1)} "
        f"THEN repeat('*', length({x})) "
        f"ELSE left({x}, {head}) || repeat('*', length({x}) - {head + tail}) "
        f"|| right({x}, {tail}) END"
    )


def mask_sql(kind: str, column_sql: str) -> str:
    """A DuckDB expression masking ``column_sql`` (an already-quoted column reference).

    The value is cast to VARCHAR first, so a phone number stored as an integer is masked
    the same way as one stored as text; the result is always VARCHAR.
    """
    x = f"CAST({column_sql} AS VARCHAR)"
    if kind == "phone":
        body = _middle_sql(f"({normalize_phone_sql(x)})", *PHONE_KEEP)
    elif kind == "id_number":
        body = _middle_sql(f"({normalize_sql(x)})", *ID_NUMBER_KEEP)
    elif kind == "name":
        body = (
            f"CASE WHEN length({x}) < 2 THEN repeat('*', length({x})) "
            f"ELSE left({x}, 1) || repeat('*', length({x}) - 1) END"
        )
    elif kind == "address":
        body = (
            f"CASE WHEN length({x}) <= 6 THEN repeat('*', length({x})) "
            f"ELSE left({x}, 6) || repeat('*', length({x}) - 6) END"
        )
    elif kind == "email":
        at = f"position('@' IN {x})"
        body = (
            f"CASE WHEN {at} <= 1 THEN repeat('*', length({x})) "
            f"WHEN {at} = 2 THEN '***@' || substr({x}, {at} + 1) "
            f"ELSE left({x}, 1) || '***@' || substr({x}, {at} + 1) END"
        )
    elif kind == "plate":
        body = _middle_sql(x, *PLATE_KEEP)
    else:
        body = "'***'"
    return f"CASE WHEN {column_sql} IS NULL THEN NULL ELSE {body} END"
