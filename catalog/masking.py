"""PIPL masks as DuckDB SQL expressions, agreeing with the Python masks.

The exchange applies masks inside the engine (the reader only ever sees the masked
expression, so ``WHERE``/``ORDER BY``/``GROUP BY`` and functions work on masked values).
:func:`mask_value` is the Python reference for every kind; ``catalog.identifiers`` holds
the phone, ID-number and name masks it reuses.  ``tests/test_masking.py`` runs the SQL
and the Python side over the same values and requires identical output.

Kinds (manifest ``pii``):

- ``phone``: first 3 and last 4 stay (``138****5678``);
- ``id_number``: first 6 and last 4 stay (``520102********1234``);
- ``name``: the first character stays (``张**``);
- ``address``: the first 6 characters stay (province/city/district, mostly);
- ``email``: the first character of the local part and the domain stay (``z***@gov.cn``);
- ``plate``: the first 2 characters (province + authority letter) and the last stay;
- ``other``: the whole value is replaced by ``***``.

A value too short for its mask is starred whole; NULL stays NULL.  Lengths count
Unicode code points on both sides.
"""

from __future__ import annotations

from collections.abc import Callable

from catalog.identifiers import _mask_middle, mask_id_number, mask_name, mask_phone


def _mask_address(s: str) -> str:
    return s[:6] + "*" * (len(s) - 6) if len(s) > 6 else "*" * len(s)


def _mask_email(s: str) -> str:
    local, at, domain = s.partition("@")
    if not at or not local:
        return "*" * len(s)
    return local[:1] + "***@" + domain


def _mask_plate(s: str) -> str:
    return _mask_middle(s, 2, 1)


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


def _middle_sql(x: str, head: int, tail: int) -> str:
    return (
        f"CASE WHEN length({x}) <= {head + tail} THEN repeat('*', length({x})) "
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
        body = _middle_sql(x, 3, 4)
    elif kind == "id_number":
        body = _middle_sql(x, 6, 4)
    elif kind == "name":
        body = f"left({x}, 1) || repeat('*', length({x}) - 1)"
    elif kind == "address":
        body = (
            f"CASE WHEN length({x}) <= 6 THEN repeat('*', length({x})) "
            f"ELSE left({x}, 6) || repeat('*', length({x}) - 6) END"
        )
    elif kind == "email":
        body = (
            f"CASE WHEN position('@' IN {x}) <= 1 THEN repeat('*', length({x})) "
            f"ELSE left({x}, 1) || '***@' || substr({x}, position('@' IN {x}) + 1) END"
        )
    elif kind == "plate":
        body = _middle_sql(x, 2, 1)
    else:
        body = "'***'"
    return f"CASE WHEN {column_sql} IS NULL THEN NULL ELSE {body} END"
