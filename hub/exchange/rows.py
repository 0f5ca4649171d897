"""The rows endpoint's query: column filters, sorting and keyset (cursor) pagination.

Builds one SELECT over the dataset's name and hands it to :meth:`Exchange.query`, so it
reads the caller's view (masks, dropped columns, row filters) like any other SQL.  Column
names are checked against the columns the caller sees and quoted; values are always
string literals (DuckDB casts them to the column's type).

Pages are ordered by the requested sort columns, then the primary key, which makes the
order total, so the next page starts strictly after the last row seen (keyset
pagination: no rows skipped or repeated while the version stays the same, and the cursor
pins the version).  When the primary key is not visible unmasked the cursor falls back to
an offset, the rows then ordered by every visible column after the requested ones.  NULLs
sort last in both directions.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from catalog.errors import InvalidRequest
from catalog.sqltext import quote_ident, quote_literal

OPS = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "in": "IN"}
MAX_PAGE = 10_000


@dataclass(frozen=True)
class Filter:
    column: str
    op: str
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Filter:
        """``column:op:value`` (``in`` takes comma-separated values)."""
        column, _, rest = text.partition(":")
        op, sep, value = rest.partition(":")
        if not column or not sep or op not in OPS:
            raise InvalidRequest(
                f"filter must look like column:op:value with op one of {', '.join(OPS)}, "
                f"not {text!r}",
                field="filter",
                value=text,
            )
        values = tuple(value.split(",")) if op == "in" else (value,)
        return cls(column, op, values)

    def sql(self) -> str:
        if self.op == "in":
            listed = ", ".join(quote_literal(v) for v in self.values)
            return f"{quote_ident(self.column)} IN ({listed})"
        return f"{quote_ident(self.column)} {OPS[self.op]} {quote_literal(self.values[0])}"


@dataclass(frozen=True)
class Cursor:
    version: int
    after: list[Any] | None = None  # keyset: the last row's order-key values
    offset: int | None = None  # fallback when the order is not total

    def encode(self) -> str:
        doc = {"v": self.version, "k": self.after, "o": self.offset}
        raw = json.dumps(doc, separators=(",", ":"), default=_jsonable).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor a client sent back; anything but the shape :meth:`encode` makes —
        integers past 2**53, nested values, other JSON — is an :class:`InvalidRequest`."""
        try:
            if len(text) > MAX_CURSOR:
                raise ValueError
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError
            version, after, offset = doc["v"], doc.get("k"), doc.get("o")
            if not _whole(version, 1, _MAX_VERSION):
                raise ValueError
            if after is not None and (
                not isinstance(after, list) or not all(_scalar(v) for v in after)
            ):
                raise ValueError
            if offset is not None and not _whole(offset, 0, _MAX_OFFSET):
                raise ValueError
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
            raise InvalidRequest("cursor is not one this API handed out", field="cursor") from None
        return cls(version, after, offset)


MAX_CURSOR = 8192
"""Characters of a cursor (one this API hands out is far shorter)."""
_MAX_VERSION = 2**31 - 1  # versions are INTEGER columns of the catalog
_MAX_OFFSET = 2**53 - 1


def _whole(value: Any, least: int, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and least <= value <= most


def _scalar(value: Any) -> bool:
    """A keyset value as :meth:`Cursor.encode` writes it: a string, a number (any size:
    it becomes an SQL literal, never a Python or SQL integer of ours), a boolean."""
    return value is None or isinstance(value, str | int | float | bool)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


@dataclass(frozen=True)
class SortKey:
    column: str
    desc: bool = False


@dataclass
class RowsQuery:
    """A page request over one dataset, as the caller may see it."""

    dataset: str
    visible: Sequence[str]
    primary_key: Sequence[str]
    keyset_ok: bool
    filters: list[Filter] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    columns: list[str] | None = None
    limit: int = 100

    def _check(self, name: str, label: str) -> None:
        if name not in self.visible:
            raise InvalidRequest(
                f"{label} names column {name!r}, which is not among the columns you may see: "
                f"{', '.join(self.visible)}",
                field=label,
                column=name,
            )

    def validate(self) -> None:
        if not 0 < self.limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be 1..{MAX_PAGE}", field="limit")
        for f in self.filters:
            self._check(f.column, "filter")
        for k in self.sort:
            self._check(k.column, "sort")
        for c in self.columns or []:
            self._check(c, "columns")

    @property
    def order(self) -> list[SortKey]:
        keys = list(self.sort)
        if self.keyset_ok:
            named = {k.column for k in keys}
            keys += [SortKey(c) for c in self.primary_key if c not in named]
        return keys

    def sql(self, cursor: Cursor | None) -> str:
        self.validate()
        order = self.order
        cols = self.columns or list(self.visible)
        # Order-key columns come along (last) so the next cursor can be read off the page.
        extra = [k.column for k in order if k.column not in cols]
        select = ", ".join(quote_ident(c) for c in [*cols, *extra])
        where = [f.sql() for f in self.filters]
        if cursor is not None and cursor.after is not None:
            if not self.keyset_ok or len(cursor.after) != len(order):
                raise InvalidRequest("cursor does not match this sort order", field="cursor")
            where.append(_after(order, cursor.after))
        sql = f"SELECT {select} FROM {quote_ident(self.dataset)}"
        if where:
            sql += " WHERE " + " AND ".join(f"({w})" for w in where)
        ordering = list(order)
        if not self.keyset_ok:
            # No key makes the order total: every visible column breaks the ties, so that
            # an offset names the same rows on every page (the exchange keeps no insertion
            # order, docs/decisions.md D30).  Rows equal in all of them are alike to the caller.
            named = {k.column for k in order}
            ordering += [SortKey(c) for c in self.visible if c not in named]
        if ordering:
            sql += " ORDER BY " + ", ".join(
                f"{quote_ident(k.column)} {'DESC' if k.desc else 'ASC'} NULLS LAST"
                for k in ordering
            )
        sql += f" LIMIT {self.limit + 1}"  # one more: is there a next page?
        if cursor is not None and cursor.offset:
            sql += f" OFFSET {cursor.offset}"
        return sql

    def extra_columns(self) -> list[str]:
        cols = self.columns or list(self.visible)
        return [k.column for k in self.order if k.column not in cols]


def _after(order: Sequence[SortKey], values: Sequence[Any]) -> str:
    """Rows strictly after ``values`` in ``order`` (NULLS LAST in both directions)."""
    alternatives = []
    for i, key in enumerate(order):
        same = [
            f"{quote_ident(k.column)} IS NOT DISTINCT FROM {quote_literal(v)}"
            for k, v in zip(order[:i], values[:i], strict=True)
        ]
        v = values[i]
        if v is None:
            continue  # nothing sorts after NULL at this position; ties go to later keys
        op = "<" if key.desc else ">"
        col = quote_ident(key.column)
        step = f"({col} {op} {quote_literal(v)} OR {col} IS NULL)"
        alternatives.append("(" + " AND ".join([*same, step]) + ")")
    return " OR ".join(alternatives) or "FALSE"


def parse_sort(text: str | None) -> list[SortKey]:
    """``-amount,ticket_id`` → amount descending, then ticket_id ascending."""
    keys = []
    for part in (text or "").split(","):
        part = part.strip()
        if part:
            keys.append(SortKey(part.lstrip("-+"), desc=part.startswith("-")))
    return keys
